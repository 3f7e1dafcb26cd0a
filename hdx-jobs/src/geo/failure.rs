//! Why a geopreview import failed, in the words CKAN expects: the old service reported a failure
//! as `error_class` (the Python exception's class name), `type` (one of a fixed list) and
//! `message`. Every step of the pipeline returns a [`Failure`], so the report is built in one
//! place and the list of types stays the old one (docs/hdx-contract.md §3.7).
//!
//! | what happened | error_class | type |
//! |---|---|---|
//! | Content-Length, the stream or an archive's contents over the limits | FileTooLargeException | file-too-large |
//! | download or import slower than its time budget, a stalled server | TimeoutException | timeout |
//! | the download folder cannot be made | FolderCreationException | folder-creation-problem |
//! | GDAL cannot import the file (after the repair rules), degraded import, importer crashed | PushingToPostgisException | pushing-to-postgis-problem |
//! | no download URL, or not http/https | MissingUrlException | missing-url |
//! | the URL (or a redirect) leads to an address downloads may not reach (`HDX_OUTBOUND_ALLOW`) | AddressNotAllowedException | missing-url |
//! | no bounding box or no fields (e.g. zero features) | FetchLayerMetadataException | fetch-bounding-box-problem |
//! | no CKAN URL or API key | WrongConfigurationException | wrong-configuration |
//! | HTTP error status, connection problems, redirect loops, file name unknown, unsafe or broken archive | HTTPError, ConnectionError, TooManyRedirects, ValueError, UnsafeArchiveException, BadZipFile | unknown |

use std::fmt;

use serde::{Deserialize, Serialize};

/// The failure types CKAN knows (docs/hdx-contract.md §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// `file-too-large`.
    FileTooLarge,
    /// `timeout`.
    Timeout,
    /// `folder-creation-problem`.
    FolderCreation,
    /// `pushing-to-postgis-problem`.
    PushingToPostgis,
    /// `missing-url`.
    MissingUrl,
    /// `fetch-bounding-box-problem`.
    FetchBoundingBox,
    /// `wrong-configuration`.
    WrongConfiguration,
    /// `unknown`: anything else.
    Unknown,
}

impl FailureKind {
    /// The `type` string CKAN receives.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::FileTooLarge => "file-too-large",
            FailureKind::Timeout => "timeout",
            FailureKind::FolderCreation => "folder-creation-problem",
            FailureKind::PushingToPostgis => "pushing-to-postgis-problem",
            FailureKind::MissingUrl => "missing-url",
            FailureKind::FetchBoundingBox => "fetch-bounding-box-problem",
            FailureKind::WrongConfiguration => "wrong-configuration",
            FailureKind::Unknown => "unknown",
        }
    }
}

/// The old service's message when GDAL cannot import a file.
pub const PUSHING_MESSAGE: &str = "Problem during ogr2ogr import to postgis";

/// A failed import, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// `error_class`.
    pub class: String,
    /// `type`.
    pub kind: FailureKind,
    /// `message` (safe to show: no database host, user or password).
    pub message: String,
    /// More for the logs and the job result (GDAL's messages, scrubbed), not sent to CKAN.
    pub detail: Option<String>,
}

impl Failure {
    /// A failure of a class and type.
    pub fn new(class: &str, kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            class: class.to_string(),
            kind,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds detail for the logs.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// `missing-url`: the URL's host resolves only to addresses downloads may not reach. The
    /// message names the host and nothing of the transport (no address, port or error), so
    /// reports cannot be used to scan the worker's network.
    pub fn address_not_allowed(host: &str) -> Self {
        Self::new(
            "AddressNotAllowedException",
            FailureKind::MissingUrl,
            format!("Url missing or has a problem: the address of {host} is not allowed"),
        )
    }

    /// `file-too-large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new("FileTooLargeException", FailureKind::FileTooLarge, message)
    }

    /// `timeout`.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new("TimeoutException", FailureKind::Timeout, message)
    }

    /// `folder-creation-problem`.
    pub fn folder(message: impl Into<String>) -> Self {
        Self::new(
            "FolderCreationException",
            FailureKind::FolderCreation,
            message,
        )
    }

    /// `pushing-to-postgis-problem` with the old message.
    pub fn pushing() -> Self {
        Self::new(
            "PushingToPostgisException",
            FailureKind::PushingToPostgis,
            PUSHING_MESSAGE,
        )
    }

    /// `pushing-to-postgis-problem` with a message of its own.
    pub fn pushing_because(message: impl Into<String>) -> Self {
        Self::new(
            "PushingToPostgisException",
            FailureKind::PushingToPostgis,
            message,
        )
    }

    /// `missing-url`.
    pub fn missing_url(message: impl Into<String>) -> Self {
        Self::new("MissingUrlException", FailureKind::MissingUrl, message)
    }

    /// `fetch-bounding-box-problem`.
    pub fn metadata(message: impl Into<String>) -> Self {
        Self::new(
            "FetchLayerMetadataException",
            FailureKind::FetchBoundingBox,
            message,
        )
    }

    /// `wrong-configuration`.
    pub fn wrong_configuration(message: impl Into<String>) -> Self {
        Self::new(
            "WrongConfigurationException",
            FailureKind::WrongConfiguration,
            message,
        )
    }

    /// `unknown`, with a class of its own.
    pub fn unknown(class: &str, message: impl Into<String>) -> Self {
        Self::new(class, FailureKind::Unknown, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.class,
            self.kind.as_str(),
            self.message
        )
    }
}

impl std::error::Error for Failure {}
