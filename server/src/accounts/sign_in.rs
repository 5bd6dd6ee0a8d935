//! Signing in: the rate limit on failed attempts and the threads that check passwords.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracing::warn;

use super::{AccountError, hash_password, verify_password};

/// Every password thread is busy and their queue is full: try again shortly.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many password checks under way")]
pub struct PasswordsBusy;

/// What one attempt is counted against. Attempts from a device that signed in to the login
/// before (it shows that login's device cookie) are counted against that device only; all others
/// against their address (IPv6 by its /64) and against the login. So nobody can lock a user out
/// of the browsers they already use, however many addresses they guess from, and a flood from
/// many addresses stays within each login's limit (OWASP's device cookies).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Counted {
    Address(String),
    Login(String),
    Device(String),
    /// Sign-ins with the right password: not failures, but not free either (each costs a
    /// password check and a session).
    SignedIn(String),
}

impl Counted {
    fn limit(&self) -> usize {
        match self {
            Counted::Address(_) => SignInLimiter::PER_ADDRESS,
            Counted::Login(_) | Counted::Device(_) => SignInLimiter::PER_LOGIN,
            Counted::SignedIn(_) => SignInLimiter::SIGN_INS_PER_LOGIN,
        }
    }
}

#[derive(Debug, Default)]
struct Attempts {
    /// Times of counted attempts within the window, oldest first.
    times: std::collections::VecDeque<Instant>,
    /// A login nobody has: the first entry forgotten when the table is full.
    unknown_login: bool,
    /// When a refusal for this entry was last written to the audit log.
    refusal_audited: Option<Instant>,
}

/// Sign-in attempts in a sliding window, counted before the password is checked (so a burst of
/// parallel guesses counts in full) and forgiven when the password was right; and bounds on the
/// work sign-ins cause, so a flood of them cannot take memory or the other requests' time.
#[derive(Debug)]
pub struct SignInLimiter {
    attempts: Mutex<HashMap<Counted, Attempts>>,
    /// Sign-ins handled at once from unknown devices; beyond, refused at once (503).
    pub(crate) strangers: Arc<tokio::sync::Semaphore>,
    /// Sign-ins handled at once from devices that signed in before: a lane of their own.
    pub(crate) known_devices: Arc<tokio::sync::Semaphore>,
    /// Where passwords are checked (and hashed).
    pub passwords: PasswordThreads,
    /// How long a password check took lately (µs, a moving average): an unknown login waits as
    /// long instead of computing one, so it costs nothing and still looks the same.
    typical_check_micros: std::sync::atomic::AtomicU64,
}

impl Default for SignInLimiter {
    fn default() -> Self {
        Self {
            attempts: Mutex::default(),
            strangers: Arc::new(tokio::sync::Semaphore::new(32)),
            known_devices: Arc::new(tokio::sync::Semaphore::new(8)),
            passwords: PasswordThreads::default(),
            typical_check_micros: std::sync::atomic::AtomicU64::new(50_000),
        }
    }
}

impl SignInLimiter {
    const WINDOW: Duration = Duration::from_secs(15 * 60);
    /// Attempts per login from unknown devices, and per known device.
    const PER_LOGIN: usize = 10;
    /// Attempts per address (or IPv6 /64) from unknown devices.
    const PER_ADDRESS: usize = 20;
    /// Sign-ins with the right password per login, from anywhere.
    const SIGN_INS_PER_LOGIN: usize = 60;
    /// Entries kept at most (about 100 bytes each). When full, room is made as
    /// [`SignInLimiter::make_room`] says; an attempt is never refused because the table is full.
    const MAX_KEYS: usize = 100_000;

    pub(crate) fn counted(login: &str, address: std::net::IpAddr, device: Option<&str>) -> Vec<Counted> {
        match device {
            Some(device) => vec![Counted::Device(device.to_owned())],
            None => {
                let address = match address {
                    std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                        let s = v6.segments();
                        format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                    }
                    other => other.to_canonical().to_string(),
                };
                vec![Counted::Address(address), Counted::Login(login.to_lowercase())]
            }
        }
    }

    /// Counts an attempt at `login`; `false` (refuse it unchecked) when one of its limits is
    /// reached, or the login signed in too often lately.
    pub(crate) fn attempt(&self, login: &str, counted: &[Counted]) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let signed_in = Counted::SignedIn(login.to_lowercase());
        for key in counted.iter().chain([&signed_in]) {
            if let Some(entry) = attempts.get_mut(key) {
                while entry.times.front().is_some_and(|t| now.duration_since(*t) >= Self::WINDOW) {
                    entry.times.pop_front();
                }
                if entry.times.len() >= key.limit() {
                    return false;
                }
            }
        }
        if attempts.len() + counted.len() > Self::MAX_KEYS {
            Self::make_room(&mut attempts, now);
        }
        for key in counted {
            attempts.entry(key.clone()).or_default().times.push_back(now);
        }
        true
    }

    /// Whether a refused attempt should go to the audit log: the first refusal of a lockout is,
    /// the rest of the window's are only counted, so hammering a locked login cannot grow the
    /// audit log at the rate of requests.
    pub(crate) fn audit_refusal(&self, counted: &[Counted]) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let key = counted
            .iter()
            .find(|key| attempts.get(*key).is_some_and(|entry| entry.times.len() >= key.limit()))
            .cloned();
        let Some(entry) = key.and_then(|key| attempts.get_mut(&key)) else { return true };
        let audit = entry.refusal_audited.is_none_or(|at| now.duration_since(at) >= Self::WINDOW);
        if audit {
            entry.refusal_audited = Some(now);
        }
        audit
    }

    /// Frees a tenth of the table: expired entries, then unknown logins, then addresses, then
    /// the longest quiet. Known logins' counts go last: they are what stands between a guesser
    /// and a password, whatever the addresses.
    fn make_room(attempts: &mut HashMap<Counted, Attempts>, now: Instant) {
        attempts.retain(|_, entry| entry.times.back().is_some_and(|t| now.duration_since(*t) < Self::WINDOW));
        let target = Self::MAX_KEYS - Self::MAX_KEYS / 10;
        if attempts.len() <= target {
            return;
        }
        let rank = |key: &Counted, entry: &Attempts| match key {
            Counted::Login(_) if entry.unknown_login => 0,
            Counted::Address(_) => 1,
            Counted::SignedIn(_) => 2,
            Counted::Device(_) => 3,
            Counted::Login(_) => 4,
        };
        let mut order: Vec<(u8, Instant, Counted)> = attempts
            .iter()
            .map(|(key, entry)| (rank(key, entry), entry.times.back().copied().unwrap_or(now), key.clone()))
            .collect();
        order.sort_unstable_by_key(|(rank, last, _)| (*rank, *last));
        for (_, _, key) in order.into_iter().take(attempts.len() - target) {
            attempts.remove(&key);
        }
    }

    /// The login has no user: its entry may go first when the table is full.
    pub(crate) fn unknown_login(&self, counted: &[Counted]) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        for key in counted.iter().filter(|k| matches!(k, Counted::Login(_))) {
            if let Some(entry) = attempts.get_mut(key) {
                entry.unknown_login = true;
            }
        }
    }

    /// This attempt is not a failure (the right password, or refused only because the server
    /// was busy): it is taken back from every count.
    pub(crate) fn forgive(&self, counted: &[Counted]) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        for key in counted {
            if let Some(entry) = attempts.get_mut(key) {
                entry.times.pop_back();
            }
        }
    }

    /// The right password: forgiven as a failure, counted as a sign-in of `login`.
    pub(crate) fn succeeded(&self, login: &str, counted: &[Counted]) {
        self.forgive(counted);
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts.entry(Counted::SignedIn(login.to_lowercase())).or_default().times.push_back(Instant::now());
    }

    /// Checks `password` against `hash` on the password threads; without a hash (no such
    /// login), waits as long as a check takes instead.
    pub(crate) async fn check_password(&self, password: String, hash: Option<String>) -> Result<bool, PasswordsBusy> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(hash) = hash else {
            // Busy exactly when a real check would be, so busy answers do not tell which
            // logins exist.
            if self.passwords.is_full() {
                return Err(PasswordsBusy);
            }
            let typical = self.typical_check_micros.load(Relaxed);
            tokio::time::sleep(Duration::from_micros(typical)).await;
            return Ok(false);
        };
        let started = Instant::now();
        let matches = self.passwords.verify(password, hash).await?;
        let took = started.elapsed().as_micros().min(10_000_000) as u64;
        let typical = self.typical_check_micros.load(Relaxed);
        self.typical_check_micros.store((typical * 7 + took) / 8, Relaxed);
        Ok(matches)
    }
}

/// Work for the password threads.
enum PasswordJob {
    Verify { password: String, hash: String, answer: tokio::sync::oneshot::Sender<bool> },
    Hash { password: String, answer: tokio::sync::oneshot::Sender<Result<String, AccountError>> },
}

/// Two threads that compute argon2id, fed through a queue of 16. A hash takes 19 MiB and a core
/// for tens of milliseconds: on two long-lived threads the allocator reuses the memory (fresh
/// blocking threads each kept a copy), and a job stays counted until it is done even when its
/// client has gone, so a flood cannot pile up work. A full queue answers 503.
#[derive(Debug)]
pub struct PasswordThreads {
    jobs: std::sync::mpsc::SyncSender<PasswordJob>,
    /// Jobs submitted and not yet done.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for PasswordThreads {
    fn default() -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<PasswordJob>(Self::QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for n in 0..2 {
            let (queue, pending) = (queue.clone(), pending.clone());
            let spawned = std::thread::Builder::new().name(format!("password-{n}")).spawn(move || {
                loop {
                    let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        // Every sender is gone: the server is stopping.
                        Err(_) => return,
                    };
                    match job {
                        PasswordJob::Verify { password, hash, answer } => {
                            let _ = answer.send(verify_password(&password, &hash));
                        }
                        PasswordJob::Hash { password, answer } => {
                            let _ = answer.send(hash_password(&password));
                        }
                    }
                    pending.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            if let Err(error) = spawned {
                warn!(%error, "could not start a password thread");
            }
        }
        Self { jobs, pending }
    }
}

impl PasswordThreads {
    /// Jobs that may wait.
    const QUEUE: usize = 16;

    fn submit(&self, job: PasswordJob) -> Result<(), PasswordsBusy> {
        self.jobs.try_send(job).map_err(|_| PasswordsBusy)?;
        self.pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether a job submitted now would be refused (or very nearly).
    fn is_full(&self) -> bool {
        self.pending.load(std::sync::atomic::Ordering::Relaxed) >= Self::QUEUE
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, PasswordsBusy> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.submit(PasswordJob::Verify { password, hash, answer })?;
        answered.await.map_err(|_| PasswordsBusy)
    }

    /// An argon2id hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, AccountError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.submit(PasswordJob::Hash { password, answer })?;
        answered.await.map_err(|_| PasswordsBusy)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_are_limited_per_login_and_address_and_known_devices_apart() {
        let limiter = SignInLimiter::default();
        let from = |n: u8| std::net::IpAddr::from([10, 0, 0, n]);
        let stranger = |n| SignInLimiter::counted("Owner@Example.com", from(n), None);
        // Guesses at one login from ten addresses: the login's limit, not each address's.
        let allowed = (0..50).filter(|n| limiter.attempt("Owner@Example.com", &stranger(n % 10))).count();
        assert_eq!(allowed, SignInLimiter::PER_LOGIN);
        assert!(!limiter.attempt("OWNER@example.com", &SignInLimiter::counted("OWNER@example.com", from(99), None)));
        // The owner's own browser is not locked out by them.
        let device = SignInLimiter::counted("owner@example.com", from(1), Some("phone"));
        assert!(limiter.attempt("owner@example.com", &device));
        limiter.forgive(&device);
        // A right password is not counted as a failure: signing in often locks nobody out of
        // their guesses, but sign-ins themselves have a generous limit of their own.
        for _ in 0..SignInLimiter::SIGN_INS_PER_LOGIN {
            assert!(limiter.attempt("owner@example.com", &device));
            limiter.succeeded("owner@example.com", &device);
        }
        assert!(!limiter.attempt("owner@example.com", &device), "a sign-in past the limit");
        // One address spraying logins is stopped too.
        let allowed = (0..100)
            .filter(|n| {
                let login = format!("login-{n}");
                limiter.attempt(&login, &SignInLimiter::counted(&login, from(200), None))
            })
            .count();
        assert_eq!(allowed, SignInLimiter::PER_ADDRESS);
        // An IPv6 network counts as one address.
        let v6 = |last: u16| std::net::IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        assert_eq!(SignInLimiter::counted("x", v6(1), None), SignInLimiter::counted("x", v6(2), None));
    }

    #[test]
    fn a_full_table_forgets_unknown_logins_first_and_never_refuses_for_being_full() {
        let limiter = SignInLimiter::default();
        let owner = SignInLimiter::counted("owner", std::net::IpAddr::from([10, 0, 0, 1]), None);
        for _ in 0..SignInLimiter::PER_LOGIN {
            assert!(limiter.attempt("owner", &owner));
        }
        for n in 0..SignInLimiter::MAX_KEYS as u32 {
            let login = format!("nobody-{n}");
            let counted = SignInLimiter::counted(&login, std::net::IpAddr::from(n.to_be_bytes()), None);
            assert!(limiter.attempt(&login, &counted), "attempt {n} refused");
            limiter.unknown_login(&counted);
        }
        assert!(limiter.attempts.lock().expect("lock").len() <= SignInLimiter::MAX_KEYS);
        assert!(!limiter.attempt("owner", &owner), "the known login's count survived the flood");
    }
}
