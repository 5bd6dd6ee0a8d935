//! Accounts: organisations, users and their roles, passwords, the audit log, and who a request
//! runs as. Every API request runs as a [`Viewer`], whose scope the database itself enforces:
//! [`Viewer::begin`] opens a transaction of the `chillcloud_api` role with `chillcloud.scope`
//! set, under the row security of migration 0011, so a query can only return the viewer's sites.
//! Signing in (with its rate limit) is in [`sign_in`]; the routes in [`api`].

pub mod api;
pub mod sign_in;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::warn;
use utoipa::ToSchema;

use crate::secrets::{digest, random_secret};

/// How long an invitation may be taken up.
const INVITATION_DAYS: i64 = 7;
/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// The longest login, in bytes.
pub const MAX_LOGIN: usize = 200;

/// Why an account could not be made or changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// What was asked is not valid (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// It clashes with what exists.
    #[error("{0}")]
    Conflict(String),
    /// Hashing a password failed: a bug or a broken random source, never the caller's fault.
    #[error("hashing a password failed: {0}")]
    Hash(String),
    /// Every password thread is busy.
    #[error(transparent)]
    Busy(#[from] sign_in::PasswordsBusy),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What someone does for their organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The service organisation's administrator: everything, including accounts.
    Admin,
    /// A service manager: the fleet, paging, rules, tickets.
    Manager,
    /// A service engineer: the fleet, alarms, tickets, rules.
    Engineer,
    /// Sales: the fleet's operating records, read-only.
    Sales,
    /// A customer's owner: their sites, acknowledging their alarms.
    Owner,
    /// A customer's duty staff: as the owner.
    Duty,
}

impl Role {
    /// Parses the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Engineer => "engineer",
            Role::Sales => "sales",
            Role::Owner => "owner",
            Role::Duty => "duty",
        }
    }

    /// Whether the role belongs to the service organisation (else to a customer).
    pub fn is_service(self) -> bool {
        matches!(self, Role::Admin | Role::Manager | Role::Engineer | Role::Sales)
    }

    /// Whether someone in this role may do `what`.
    pub fn may(self, what: Permission) -> bool {
        use Permission::*;
        use Role::*;
        match what {
            Read => true,
            Acknowledge => !matches!(self, Sales),
            ReadTickets => !matches!(self, Sales),
            WorkTickets | ManageRules | ReadPaging | DraftReports | ConfigureGateways => {
                matches!(self, Admin | Manager | Engineer)
            }
            ManagePaging | ProvisionGateways => matches!(self, Admin | Manager),
            ManageAccounts => matches!(self, Admin),
            Share => !matches!(self, Duty),
            // The people who answer for the plant: the owner and the service's engineers. Duty
            // staff acknowledge and call; a remote start is the owner's decision.
            Operate => matches!(self, Admin | Manager | Engineer | Owner),
        }
    }
}

/// What a request asks to do, beyond reading its sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Units, values, history and alarms of the viewer's sites.
    Read,
    /// Acknowledge or shelve an alarm.
    Acknowledge,
    /// Read service tickets.
    ReadTickets,
    /// Open, assign, triage, note and close tickets.
    WorkTickets,
    /// Change rules and maintenance windows.
    ManageRules,
    /// Read the outbox, people and the event stream.
    ReadPaging,
    /// Change people, contacts, rotations and paging policies.
    ManagePaging,
    /// Organisations, users, and which customer owns a site.
    ManageAccounts,
    /// Make and revoke read-only share links of a unit's operating record.
    Share,
    /// Start, stop and change setpoints of a unit remotely.
    Operate,
    /// Draft, edit and sign remote-doctor reports; set units' ratings and sites' tariffs.
    DraftReports,
    /// Read and change gateways' configurations held by the server.
    ConfigureGateways,
    /// Provision gateways: make their broker credentials.
    ProvisionGateways,
}

/// Which sites a request may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The service organisation: every site.
    All,
    /// A customer: its own sites.
    Organisation(i64),
}

/// Who a request runs as.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The user; none for the operator's token.
    pub user_id: Option<i64>,
    /// Their login, recorded as the actor of what they do.
    pub login: String,
    /// Their display name.
    pub name: String,
    /// Their role.
    pub role: Role,
    /// Their organisation's name.
    pub organisation: String,
    /// `en` or `zh`.
    pub language: String,
    scope: Scope,
    /// The session's CSRF token (cookie sessions only).
    pub csrf: Option<String>,
}

impl Viewer {
    /// The operator, through the token in `<data-dir>/api-token`: the service organisation's
    /// administrator, for first set-up and integrations.
    pub fn operator() -> Self {
        Self {
            user_id: None,
            login: "operator".into(),
            name: "operator".into(),
            role: Role::Admin,
            organisation: "service".into(),
            language: "en".into(),
            scope: Scope::All,
            csrf: None,
        }
    }

    /// How actions are attributed: the login, and the name when they differ.
    pub fn actor(&self) -> String {
        if self.name.is_empty() || self.name == self.login {
            self.login.clone()
        } else {
            format!("{} ({})", self.name, self.login)
        }
    }

    /// What the viewer sees: `all` (the service organisation) or a customer's id. Shared
    /// limits are kept per scope, so one customer cannot use up another's.
    pub fn scope(&self) -> String {
        match self.scope {
            Scope::All => "all".to_owned(),
            Scope::Organisation(id) => id.to_string(),
        }
    }

    /// A transaction on `api` (the `chillcloud_api` pool) that sees only the viewer's sites, and
    /// their own sessions and API tokens.
    pub async fn begin(&self, api: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
        let mut tx = api.begin().await?;
        sqlx::query("select set_config('chillcloud.scope', $1, true), set_config('chillcloud.user', $2, true)")
            .bind(self.scope())
            .bind(self.user_id.map(|id| id.to_string()).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// An argon2id hash (PHC string) of a password.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| AccountError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Records an audit entry; a failure to record is logged, never fatal to the request.
pub async fn audit(
    pool: &PgPool,
    viewer: Option<&Viewer>,
    actor: &str,
    action: &str,
    target: &str,
    outcome: &str,
    address: &str,
) {
    let written = sqlx::query(
        "insert into audit_log (user_id, actor, action, target, outcome, address) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(viewer.and_then(|v| v.user_id))
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(outcome)
    .bind(address)
    .execute(pool)
    .await;
    if let Err(error) = written {
        warn!(%error, action, "could not write the audit log");
    }
}

/// A session's user, with the session's CSRF token.
#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub(crate) csrf_token: String,
    #[sqlx(flatten)]
    pub(crate) user: UserRow,
}

/// A user signing in, with their password's hash (none before they took up their invitation).
#[derive(sqlx::FromRow)]
pub(crate) struct CredentialRow {
    pub(crate) password_hash: Option<String>,
    #[sqlx(flatten)]
    pub(crate) user: UserRow,
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub(crate) id: i64,
    pub(crate) login: String,
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) language: String,
    pub(crate) organisation_id: i64,
    pub(crate) organisation: String,
    pub(crate) kind: String,
}

impl UserRow {
    /// Selects the row's columns; callers join and filter.
    pub(crate) const SELECT: &'static str = "select u.id, u.login, u.name, u.role, u.language, u.organisation_id,
            o.name as organisation, o.kind
        from users u join organisations o on o.id = u.organisation_id";

    pub(crate) fn viewer(self, csrf: Option<String>) -> Option<Viewer> {
        let role = Role::parse(&self.role)?;
        // A role that does not match its organisation's kind gets nothing.
        let scope = match (self.kind.as_str(), role.is_service()) {
            ("service", true) => Scope::All,
            ("customer", false) => Scope::Organisation(self.organisation_id),
            _ => return None,
        };
        Some(Viewer {
            user_id: Some(self.id),
            login: self.login,
            name: self.name,
            role,
            organisation: self.organisation,
            language: self.language,
            scope,
            csrf,
        })
    }
}

/// A new user, invited to set their password.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"login": "li.na@acme.example", "name": "Li Na", "role": "owner", "organisation_id": 2,
    "language": "zh"}))]
pub struct NewUser {
    /// Their login (an e-mail address, say).
    pub login: String,
    /// Their name.
    pub name: String,
    /// Their role; it must suit their organisation's kind.
    pub role: Role,
    /// Their organisation.
    pub organisation_id: i64,
    /// `en` (default) or `zh`.
    #[schema(pattern = "^(en|zh)$")]
    pub language: Option<String>,
}

/// Creates a user with an invitation; returns the invitation's secret (shown once).
pub async fn create_user(db: &mut sqlx::PgConnection, user: &NewUser) -> Result<(i64, String), AccountError> {
    let login = user.login.trim();
    if login.is_empty() || login.len() > MAX_LOGIN || user.name.trim().is_empty() {
        return Err(AccountError::Invalid("a user needs a login (at most 200 characters) and a name".into()));
    }
    let language = user.language.clone().unwrap_or_else(|| "en".into());
    if !matches!(language.as_str(), "en" | "zh") {
        return Err(AccountError::Invalid("language is en or zh".into()));
    }
    let kind: Option<String> = sqlx::query_scalar("select kind from organisations where id = $1")
        .bind(user.organisation_id)
        .fetch_optional(&mut *db)
        .await?;
    match kind.as_deref() {
        None => return Err(AccountError::Invalid("no such organisation".into())),
        Some(kind) if (kind == "service") != user.role.is_service() => {
            return Err(AccountError::Invalid(format!("a {kind} organisation has no {} role", user.role.name())));
        }
        Some(_) => {}
    }
    let id: Option<i64> = sqlx::query_scalar(
        "insert into users (organisation_id, login, name, role, language) values ($1, $2, $3, $4, $5)
         on conflict (login) do nothing returning id",
    )
    .bind(user.organisation_id)
    .bind(login)
    .bind(user.name.trim())
    .bind(user.role.name())
    .bind(&language)
    .fetch_optional(&mut *db)
    .await?;
    let id = id.ok_or_else(|| AccountError::Conflict(format!("the login {login:?} is taken")))?;
    let secret = random_secret();
    sqlx::query(
        "insert into invitations (token_hash, user_id, expires_at) values ($1, $2, now() + make_interval(days => $3))",
    )
    .bind(digest(&secret))
    .bind(id)
    .bind(INVITATION_DAYS as i32)
    .execute(&mut *db)
    .await?;
    Ok((id, secret))
}

/// `create-admin`: the service organisation (made if missing) and an administrator with a
/// generated password, returned once.
pub async fn create_admin(pool: &PgPool, login: &str, name: &str, organisation: &str) -> Result<String, AccountError> {
    let mut tx = pool.begin().await?;
    let (id, _) = add_user(&mut tx, login, name, Role::Admin, organisation, None).await?;
    let password = random_secret()[..20].to_owned();
    let hash = hash_password(&password)?;
    sqlx::query("update users set password_hash = $2 where id = $1").bind(id).bind(hash).execute(&mut *tx).await?;
    sqlx::query("update invitations set used_at = now() where user_id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(password)
}

/// `invite`: a user of `organisation` (made if missing, of the kind the role needs); returns
/// the invitation's secret.
pub async fn invite(
    pool: &PgPool,
    login: &str,
    name: &str,
    role: Role,
    organisation: &str,
    language: Option<String>,
) -> Result<String, AccountError> {
    let mut tx = pool.begin().await?;
    let (_, secret) = add_user(&mut tx, login, name, role, organisation, language).await?;
    tx.commit().await?;
    Ok(secret)
}

/// A user of the organisation named `organisation`, made if missing, of the kind `role` needs.
async fn add_user(
    db: &mut sqlx::PgConnection,
    login: &str,
    name: &str,
    role: Role,
    organisation: &str,
    language: Option<String>,
) -> Result<(i64, String), AccountError> {
    let kind = if role.is_service() { "service" } else { "customer" };
    let organisation_id: i64 = sqlx::query_scalar(
        "insert into organisations (name, kind) values ($1, $2)
         on conflict (name) do update set name = excluded.name returning id",
    )
    .bind(organisation)
    .bind(kind)
    .fetch_one(&mut *db)
    .await?;
    let user = NewUser { login: login.into(), name: name.into(), role, organisation_id, language };
    create_user(db, &user).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_may_what_their_job_needs_and_no_more() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, true, true, true, true, true, true, true, true, true, true]),
            (Role::Manager, [true, true, true, true, true, true, true, false, true, true, true, true, true]),
            (Role::Engineer, [true, true, true, true, true, true, false, false, true, true, true, true, false]),
            (Role::Sales, [true, false, false, false, false, false, false, false, true, false, false, false, false]),
            (Role::Owner, [true, true, true, false, false, false, false, false, true, true, false, false, false]),
            (Role::Duty, [true, true, true, false, false, false, false, false, false, false, false, false, false]),
        ];
        let permissions = [
            Read,
            Acknowledge,
            ReadTickets,
            WorkTickets,
            ManageRules,
            ReadPaging,
            ManagePaging,
            ManageAccounts,
            Share,
            Operate,
            DraftReports,
            ConfigureGateways,
            ProvisionGateways,
        ];
        for (role, allowed) in table {
            for (permission, expected) in permissions.iter().zip(allowed) {
                assert_eq!(role.may(*permission), expected, "{role:?} {permission:?}");
            }
        }
    }

    #[test]
    fn a_password_verifies_against_its_argon2id_hash_only() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse battery!", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }
}
