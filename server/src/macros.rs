//! The server's two declarative shapes: statuses and kinds kept as text in the database and in
//! JSON (`text_enum!`: one enum each, its names written once, in its declaration), and errors
//! that are a message for people (`message_error!`).

/// A name that is not one of its enum's.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: unknown name {name:?}")]
pub struct UnknownName {
    /// The enum.
    pub kind: &'static str,
    /// What was found.
    pub name: String,
}

/// Declares an enum of names: serialised as its names (JSON, OpenAPI), read from a text column
/// with `#[sqlx(try_from = "String")]`, written with [`as_str`](#method.as_str).
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Its name, as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::macros::UnknownName;

            fn try_from(name: String) -> Result<Self, Self::Error> {
                match name.as_str() {
                    $($text => Ok(Self::$variant),)*
                    _ => Err($crate::macros::UnknownName { kind: stringify!($name), name }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Declares an error that is a message for people (why a rule or a command is refused), built
/// from a `String` or `&str`, read as a `str`.
macro_rules! message_error {
    ($(#[$meta:meta])* pub struct $name:ident;) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("{0}")]
        pub struct $name(pub String);

        impl From<String> for $name {
            fn from(message: String) -> Self {
                Self(message)
            }
        }

        impl From<&str> for $name {
            fn from(message: &str) -> Self {
                Self(message.to_owned())
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }
    };
}
