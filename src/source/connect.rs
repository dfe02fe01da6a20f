//! Connecting to MongoDB: one place that parses the connection string, checks the server
//! answers, and never lets the password into an error.

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::event::EventHandler;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::ClientOptions;

use crate::config::redact::{redact_uri, scrub, uri_password};

/// How long a command-line tool waits for a server before giving up, unless the
/// connection string sets `serverSelectionTimeoutMS`.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the driver checks each server, unless the connection string sets
/// `heartbeatFrequencyMS`.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// Why MongoDB could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection string is not valid.
    #[error("mongodb.uri `{uri}` is not a valid connection string: {message}")]
    Options {
        /// The URI, password masked.
        uri: String,
        /// The driver's message, password removed.
        message: String,
    },
    /// No server answered, or it refused the credentials.
    #[error("MongoDB at `{uri}` did not answer: {message}")]
    Unreachable {
        /// The URI, password masked.
        uri: String,
        /// The driver's message, password removed.
        message: String,
    },
}

/// A client for `uri` whose server has answered a `ping` (so a wrong address or bad
/// credentials fail here, not at the first real operation).
pub async fn connect(uri: &str) -> Result<Client, ConnectError> {
    connect_with(uri, None).await
}

/// [`connect`], calling `primary` with whether the client sees a writable primary each
/// time its view of the deployment changes (from the first primary it sees on: the
/// discovery at start is not a lost primary).
pub(crate) async fn connect_observed(
    uri: &str,
    primary: impl Fn(bool) + Send + Sync + 'static,
) -> Result<Client, ConnectError> {
    let seen = std::sync::atomic::AtomicBool::new(false);
    let handler = EventHandler::callback(move |event| {
        if let SdamEvent::TopologyDescriptionChanged(change) = event {
            // Closing the client empties the server list: that is our own stop, not a
            // deployment without a primary (a real topology always keeps its seeds).
            if change.new_description.servers().is_empty() {
                return;
            }
            let writable = change.new_description.has_writable_server();
            if writable {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if seen.load(std::sync::atomic::Ordering::Relaxed) {
                primary(writable);
            }
        }
    });
    connect_with(uri, Some(handler)).await
}

async fn connect_with(
    uri: &str,
    sdam: Option<EventHandler<SdamEvent>>,
) -> Result<Client, ConnectError> {
    let secrets = uri_password(uri);
    let clean = |e: mongodb::error::Error| {
        scrub(&crate::observe::error_text::tidy(&e.to_string()), &secrets)
    };
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| ConnectError::Options {
            uri: redact_uri(uri),
            message: clean(e),
        })?;
    options
        .server_selection_timeout
        .get_or_insert(SERVER_SELECTION_TIMEOUT);
    // The driver's 10 s default leaves a stalled server unnoticed, and a recovered one
    // unused, for that much longer.
    options.heartbeat_freq.get_or_insert(HEARTBEAT);
    options.sdam_event_handler = sdam;
    let client = Client::with_options(options).map_err(|e| ConnectError::Options {
        uri: redact_uri(uri),
        message: clean(e),
    })?;
    client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .map_err(|e| ConnectError::Unreachable {
            uri: redact_uri(uri),
            message: clean(e),
        })?;
    Ok(client)
}

/// How long [`close`] waits for the driver's cleanup.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Ends `client` once its cursors are dropped: the driver kills a dropped cursor on the
/// server from a task of its own, and that task panics inside the driver if the runtime
/// shuts down under it. Waiting here lets it finish; a handle still held elsewhere (a
/// task abandoned by a timed-out stop) is given [`CLOSE_TIMEOUT`], not forever.
pub async fn close(client: Client) {
    if tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("the MongoDB client did not close in time; its cleanup is abandoned");
    }
}
