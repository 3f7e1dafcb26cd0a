//! Geopreview: GIS files into PostGIS layers, reported to CKAN; and the layers' upkeep.
//!
//! - [`task`]: the job `importapi.tasks.create_preview.create_preview_task` (old argument dict,
//!   report to CKAN);
//! - [`pipeline`]: one import from URL or file to a layer, shared by the task and the CLI;
//! - [`download`], [`archive`]: getting the file safely, unpacking zips and KMZ safely;
//! - [`child`], [`import`]: GDAL in a child process (the worker survives GDAL crashes), the
//!   translation with COPY and the repair rules;
//! - [`staging`], [`metadata`]: staging tables swapped in atomically, bounding box and fields;
//! - [`report`], [`failure`]: `shape_info` for CKAN and the failure types;
//! - [`config`]: the PostGIS connection and the import settings (the old service's names);
//! - [`db`]: connecting to PostGIS without leaking its host, user or password in errors;
//! - [`layers`]: layer ids (the only identifier that reaches SQL), listing and dropping layers,
//!   and finding layers whose CKAN resource is gone;
//! - [`tiles`]: vector tiles and TileJSON of layers, and the notice servers get when a layer
//!   changes.

pub mod archive;
pub mod child;
pub mod config;
pub mod db;
pub mod download;
pub mod failure;
pub mod import;
pub mod layers;
pub mod metadata;
pub mod pipeline;
pub mod report;
pub mod staging;
pub mod task;
pub mod tiles;
