//! Partitions: gateways are split by a stable hash of their id into [`COUNT`] partitions, and
//! each partition is owned by one server replica at a time through a lease in PostgreSQL
//! (`partition_leases`). The owner ingests its partitions' messages and evaluates their rules;
//! every replica serves the API.
//!
//! A replica renews its leases every [`RENEW_EVERY`]; a lease not renewed for [`LEASE`] is free,
//! so the partitions of a replica that died are taken by the others within `LEASE` plus one
//! round. Each replica takes its fair share (the partitions over the replicas that renewed
//! lately) and lets go of what is beyond it, so a replica that joins gets work. Times are the
//! database's (`now()`), so the replicas' clocks need not agree. A replica that cannot renew
//! stops acting on its partitions once its leases may have expired (measured on its own
//! monotonic clock from before its last renewal was sent), before another replica can take them.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How many partitions there are. Fixed: it is in the schema (migration 0018) and in every
/// broker binding, so it bounds how many replicas can share the work.
pub const COUNT: u16 = 32;

/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(5);

/// How often a replica renews its leases and looks for partitions to take.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// The partition of a gateway: FNV-1a (64 bit) of its id, modulo [`COUNT`]. Never changed, since
/// the brokers' bindings and the leases depend on it.
pub fn of(gateway: &str) -> u16 {
    let hash = gateway
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    (hash % u64::from(COUNT)) as u16
}

/// The partitions a replica owns now.
pub type Owned = BTreeSet<u16>;

/// This replica's view of what it owns, kept current by [`Leases::run`].
#[derive(Clone)]
pub struct Ownership {
    replica: std::sync::Arc<str>,
    view: watch::Receiver<Owned>,
}

impl Ownership {
    /// The replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// What is owned now.
    pub fn owned(&self) -> Owned {
        self.view.borrow().clone()
    }

    /// Whether `gateway`'s partition is owned now.
    pub fn owns(&self, gateway: &str) -> bool {
        self.view.borrow().contains(&of(gateway))
    }

    /// Waits until ownership changes; false when the lease keeper has stopped.
    pub async fn changed(&mut self) -> bool {
        self.view.changed().await.is_ok()
    }

    /// Marks the current value seen.
    pub fn mark_seen(&mut self) {
        self.view.mark_unchanged();
    }
}

/// The lease keeper of one replica.
pub struct Leases {
    pool: PgPool,
    replica: String,
    owned: watch::Sender<Owned>,
}

impl Leases {
    /// A keeper for replica `replica` (unique among running replicas), owning nothing yet.
    pub fn new(pool: PgPool, replica: String) -> (Self, Ownership) {
        let (owned, view) = watch::channel(Owned::new());
        let ownership = Ownership { replica: replica.as_str().into(), view };
        (Self { pool, replica, owned }, ownership)
    }

    /// One round: heartbeat, renew, take or let go; returns what is owned after it.
    pub async fn round(&self) -> sqlx::Result<Owned> {
        let lease = LEASE.as_secs_f64();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "insert into replicas (id, heartbeat_at) values ($1, now())
             on conflict (id) do update set heartbeat_at = now()",
        )
        .bind(&self.replica)
        .execute(&mut *tx)
        .await?;
        let live: i64 =
            sqlx::query_scalar("select count(*) from replicas where heartbeat_at > now() - make_interval(secs => $1)")
                .bind(lease)
                .fetch_one(&mut *tx)
                .await?;
        let live = live.max(1);
        let share = (i64::from(COUNT) + live - 1) / live;
        let mut owned: Vec<i32> = sqlx::query_scalar(
            "select partition from partition_leases where owner = $1 and expires_at > now()
             order by partition for update",
        )
        .bind(&self.replica)
        .fetch_all(&mut *tx)
        .await?;
        // Beyond the fair share, leases are not renewed: they are free once they end, by which
        // time this replica has long stopped acting on them.
        owned.truncate(share as usize);
        sqlx::query(
            "update partition_leases set expires_at = now() + make_interval(secs => $2)
             where owner = $1 and partition = any($3)",
        )
        .bind(&self.replica)
        .bind(lease)
        .bind(&owned)
        .execute(&mut *tx)
        .await?;
        let held = owned.len() as i64;
        if held < share {
            let taken: Vec<i32> = sqlx::query_scalar(
                "update partition_leases set owner = $1, epoch = epoch + 1,
                        expires_at = now() + make_interval(secs => $2)
                 where partition in (select partition from partition_leases where expires_at <= now()
                                     order by partition limit $3 for update skip locked)
                 returning partition",
            )
            .bind(&self.replica)
            .bind(lease)
            .bind(share - held)
            .fetch_all(&mut *tx)
            .await?;
            owned.extend(taken);
        }
        tx.commit().await?;
        Ok(owned.into_iter().map(|p| p as u16).collect())
    }

    /// Takes a first share, so a replica starts with work when there is some to take.
    pub async fn start(&self) -> sqlx::Result<()> {
        let owned = self.round().await?;
        info!(replica = %self.replica, partitions = ?owned, "partitions owned");
        self.owned.send_replace(owned);
        Ok(())
    }

    /// Keeps the leases until `shutdown`, publishing every change of what is owned. The caller
    /// gives them up ([`Leases::release`]) once its consumers have stopped.
    pub async fn run(self, shutdown: CancellationToken) -> Self {
        // `start` renewed just before.
        let mut renewed_at = Instant::now();
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return self,
                _ = tick.tick() => {}
            }
            let started = Instant::now();
            // A round that hangs (a dead connection) counts as failed before the leases lapse.
            let round = tokio::time::timeout(LEASE - 2 * RENEW_EVERY, self.round()).await;
            let owned = match round.unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut)) {
                Ok(owned) => {
                    renewed_at = started;
                    owned
                }
                Err(error) => {
                    // Leases may lapse one round before the database says so (renewals are a
                    // round apart): stop acting two rounds ahead of that.
                    let lapsed = renewed_at.elapsed() + 2 * RENEW_EVERY >= LEASE;
                    warn!(%error, lapsed, "renewing partition leases failed");
                    if !lapsed {
                        continue;
                    }
                    Owned::new()
                }
            };
            self.owned.send_if_modified(|current| {
                if *current == owned {
                    return false;
                }
                info!(replica = %self.replica, partitions = ?owned, "partitions owned");
                *current = owned;
                true
            });
        }
    }

    /// Gives up every lease and leaves the replicas, so others take over at once.
    pub async fn release(&self) -> sqlx::Result<()> {
        self.owned.send_replace(Owned::new());
        let mut tx = self.pool.begin().await?;
        sqlx::query("update partition_leases set owner = null, expires_at = '-infinity' where owner = $1")
            .bind(&self.replica)
            .execute(&mut *tx)
            .await?;
        sqlx::query("delete from replicas where id = $1").bind(&self.replica).execute(&mut *tx).await?;
        tx.commit().await
    }
}

/// The replica id kept in `data_dir` (made on first start: the host's name and a random
/// suffix), so a replica restarted after a crash renews its own leases at once instead of
/// waiting for them to lapse. Each replica has a data directory of its own.
pub fn replica_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_owned());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let id = format!("{}-{}", if host.is_empty() { "replica" } else { host }, crate::secrets::random_hex::<4>());
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: the brokers' bindings and the leases rely on them never changing.
        assert_eq!(of(""), (0xcbf2_9ce4_8422_2325_u64 % 32) as u16);
        assert_eq!(of("a"), (0xaf63_dc4c_8601_ec8c_u64 % 32) as u16);
        let mut counts = [0u32; COUNT as usize];
        for i in 0..3_200 {
            counts[of(&format!("plant-{i}-gw")) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| (50..=150).contains(&n)), "{counts:?}");
    }
}
