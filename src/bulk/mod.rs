//! CSV files of users: the columns (shared by export, template and import),
//! the dialects, how cells are written (`csvfile`) and read back (`reader`),
//! and records read from a file arriving in chunks (`stream`).

pub mod csvfile;
pub mod reader;
pub mod stream;

pub use csvfile::{Dialect, ExportRow, ExportWriter, PROFILE_COLUMNS};
