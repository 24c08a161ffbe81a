//! CSV files of users: the columns (shared by export, template and import),
//! the dialects, how cells are written (`csvfile`) and read back (`reader`).

pub mod csvfile;
pub mod reader;

pub use csvfile::{Dialect, ExportRow, ExportWriter, PROFILE_COLUMNS};
