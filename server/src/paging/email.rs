//! E-mail over SMTP, beside SMS: people with an address get the same message by mail when the
//! paging file has an `[email]` table.

use std::path::PathBuf;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Attachment as Part, Mailbox, MultiPart, SinglePart, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use serde::Deserialize;

use super::{outbox::Attachment, providers::SendError};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// STARTTLS on the submission port (587), required.
    #[default]
    Starttls,
    /// TLS from the first byte (465).
    Tls,
    /// None: only for a relay on the same host or a test server.
    None,
}

/// `[email]` in the paging file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server.
    pub host: String,
    /// Port (default 587, or 465 with `tls`, 25 with `none`).
    pub port: Option<u16>,
    /// Connection security (default `starttls`).
    #[serde(default)]
    pub security: Security,
    /// Login, if the server wants one.
    pub username: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// The sender, for example `Chillcloud <alarms@example.com>`.
    pub from: String,
}

/// A ready SMTP sender.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Email").field("from", &self.from).finish_non_exhaustive()
    }
}

impl Email {
    /// Builds the transport (no connection yet).
    pub fn load(config: &EmailConfig) -> Result<Self, super::InvalidPagingConfig> {
        let from: Mailbox = config.from.parse().map_err(|e| format!("email.from {:?}: {e}", config.from))?;
        let mut builder = match config.security {
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .map_err(|e| format!("email.host: {e}"))?,
            Security::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(|e| format!("email.host: {e}"))?
            }
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        };
        if let Some(port) = config.port {
            builder = builder.port(port);
        }
        if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
            let password = std::fs::read_to_string(file).map_err(|e| format!("email.password_file: {e}"))?;
            builder = builder.credentials(Credentials::new(user.clone(), password.trim().to_owned()));
        }
        Ok(Self { transport: builder.build(), from })
    }

    /// Sends one message, with `attachment` if there is one.
    pub async fn send(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        attachment: Option<&Attachment>,
    ) -> Result<String, SendError> {
        let to: Mailbox = to.parse().map_err(|e| SendError::Failed(format!("address {to:?}: {e}")))?;
        let builder = Message::builder().from(self.from.clone()).to(to).subject(subject);
        let message = match attachment {
            None => builder.header(ContentType::TEXT_PLAIN).body(body.to_owned()),
            Some(file) => {
                let content_type = ContentType::parse(&file.content_type)
                    .map_err(|e| SendError::Failed(format!("attachment type {:?}: {e}", file.content_type)))?;
                builder.multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(body.to_owned()))
                        .singlepart(Part::new(file.filename.clone()).body(file.data.clone(), content_type)),
                )
            }
        }
        .map_err(|e| SendError::Failed(e.to_string()))?;
        match self.transport.send(message).await {
            Ok(response) => Ok(response.message().collect::<Vec<_>>().join(" ")),
            Err(error) if error.is_timeout() => Err(SendError::Timeout),
            Err(error) => Err(SendError::Failed(error.to_string())),
        }
    }
}
