//! CSV files of users: the columns (shared by export, template and import),
//! the dialects, and how cells are written.

pub mod csvfile;

pub use csvfile::{Dialect, ExportRow, ExportWriter, PROFILE_COLUMNS};
