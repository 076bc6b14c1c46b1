//! (being written)

use axum::Router;

use crate::api::SharedState;

pub fn routes() -> Router<SharedState> {
    Router::new()
}
