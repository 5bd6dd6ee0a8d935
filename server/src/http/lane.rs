//! Lanes: bounds on the requests that cost more than the others.

use std::sync::Arc;

use crate::{http::ApiError, metrics::Metrics};

/// A kind of request that costs more than the others (a history export's seconds of database
/// time, a live stream's lifetime): at most `total` at once, and at most `per_scope` for one
/// customer (or the service organisation), so one of them cannot take what the others need.
#[derive(Debug)]
pub struct Lane {
    what: &'static str,
    total: Arc<tokio::sync::Semaphore>,
    per_scope: usize,
    scopes: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// How long a request may wait for its turn; zero: refused at once when full.
    wait: std::time::Duration,
}

/// A place in a [`Lane`], held until dropped.
#[derive(Debug)]
pub struct InLane {
    _total: tokio::sync::OwnedSemaphorePermit,
    _scope: tokio::sync::OwnedSemaphorePermit,
}

impl Lane {
    /// A lane; `what` names its requests in the 503 answer.
    pub fn new(what: &'static str, total: usize, per_scope: usize, wait: std::time::Duration) -> Self {
        Self {
            what,
            total: Arc::new(tokio::sync::Semaphore::new(total)),
            per_scope,
            scopes: std::sync::Mutex::default(),
            wait,
        }
    }

    /// Takes a place for a request of `scope` (its own limit first, then the total), waiting
    /// in turn for at most the lane's wait; [`ApiError::Busy`] when none came.
    pub async fn enter(&self, scope: &str, metrics: &Metrics) -> Result<InLane, ApiError> {
        let own = {
            let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
            scopes
                .entry(scope.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_scope)))
                .clone()
        };
        let take = async {
            let scope = own.acquire_owned().await.ok()?;
            let total = self.total.clone().acquire_owned().await.ok()?;
            Some(InLane { _total: total, _scope: scope })
        };
        match tokio::time::timeout(self.wait, take).await {
            Ok(Some(place)) => Ok(place),
            _ => {
                metrics.requests_refused_by_bounds.inc();
                Err(ApiError::Busy(self.what))
            }
        }
    }
}

/// A body sent chunk by chunk that keeps its place in a lane until the last chunk was taken.
pub fn body_in_lane(
    chunks: impl Iterator<Item = axum::body::Bytes> + Send + 'static,
    place: InLane,
) -> axum::body::Body {
    axum::body::Body::from_stream(futures_util::stream::unfold((chunks, place), |(mut chunks, place)| async move {
        chunks.next().map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), (chunks, place)))
    }))
}
