//! Geopreview: GIS files into PostGIS layers, reported to CKAN; and the layers' upkeep.
//!
//! - [`config`]: the PostGIS connection and the import settings (the old service's names);
//! - [`db`]: connecting to PostGIS without leaking its host, user or password in errors;
//! - [`layers`]: layer ids (the only identifier that reaches SQL), listing and dropping layers,
//!   and finding layers whose CKAN resource is gone;
//! - [`tiles`]: vector tiles and TileJSON of layers, and the notice servers get when a layer
//!   changes.

pub mod config;
pub mod db;
pub mod layers;
pub mod tiles;
