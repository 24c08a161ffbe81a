//! Rows for `COPY ... FROM STDIN` in Postgres' text format: fields separated
//! by tabs, rows by newlines, `\N` for NULL, backslash escapes for the
//! characters that would break the format; arrays in their `{...}` literal
//! form.

use sqlx::PgConnection;
use uuid::Uuid;

use super::db_error;
use crate::domain::Error;

/// One COPY's worth of rows, built in memory.
#[derive(Default)]
pub(super) struct CopyRows {
    buf: Vec<u8>,
    /// Whether the current row has a field yet.
    started: bool,
}

impl CopyRows {
    fn sep(&mut self) {
        if self.started {
            self.buf.push(b'\t');
        }
        self.started = true;
    }

    fn escaped(&mut self, v: &str) {
        for b in v.bytes() {
            match b {
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                _ => self.buf.push(b),
            }
        }
    }

    pub fn text(&mut self, v: &str) -> &mut Self {
        self.sep();
        self.escaped(v);
        self
    }

    pub fn opt(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => {
                self.sep();
                self.buf.extend_from_slice(b"\\N");
                self
            }
        }
    }

    pub fn uuid(&mut self, v: Uuid) -> &mut Self {
        self.text(v.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()))
    }

    pub fn opt_uuid(&mut self, v: Option<Uuid>) -> &mut Self {
        match v {
            Some(v) => self.uuid(v),
            None => self.opt(None),
        }
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.text(&v.to_string())
    }

    /// A `text[]`: every element double-quoted, `"` and `\` escaped inside,
    /// then the whole literal escaped for the COPY format.
    pub fn array(&mut self, items: &[String]) -> &mut Self {
        let mut lit = String::from("{");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                lit.push(',');
            }
            lit.push('"');
            for c in item.chars() {
                if c == '"' || c == '\\' {
                    lit.push('\\');
                }
                lit.push(c);
            }
            lit.push('"');
        }
        lit.push('}');
        self.text(&lit)
    }

    pub fn end_row(&mut self) {
        self.buf.push(b'\n');
        self.started = false;
    }

    /// Sends the rows with `COPY table (columns) FROM STDIN`. Errors (a
    /// violated constraint) leave the transaction failed, as any statement.
    pub async fn send(
        self,
        conn: &mut PgConnection,
        table: &str,
        columns: &str,
        map_error: fn(sqlx::Error) -> Error,
    ) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut sink = conn
            .copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN"))
            .await
            .map_err(db_error)?;
        if let Err(e) = sink.send(self.buf).await {
            let _ = sink.abort(e.to_string()).await;
            return Err(map_error(e));
        }
        sink.finish().await.map_err(map_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_and_arrays_quoted() {
        let mut c = CopyRows::default();
        c.text("a\tb\\c\nd")
            .opt(None)
            .array(&["x,\"y\"".into(), "back\\slash".into(), "é".into()])
            .int(-3);
        c.end_row();
        c.array(&[]);
        c.end_row();
        assert_eq!(
            String::from_utf8(c.buf).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t{\"x,\\\\\"y\\\\\"\",\"back\\\\\\\\slash\",\"é\"}\t-3\n{}\n"
        );
    }
}
