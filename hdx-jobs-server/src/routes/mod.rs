//! The routes, grouped by what they serve. Each module's handlers carry their OpenAPI
//! description (utoipa), so `/openapi.json` is generated from the code.

pub mod checks;
pub mod enqueue;
pub mod health;
pub mod layers;
pub mod metrics;
pub mod monitor;
pub mod preview;
pub mod scheduler;
pub mod tiles;
