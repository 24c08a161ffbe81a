//! Postgres' `COPY` text format, both ways: fields separated by tabs, rows
//! by newlines, `\N` for NULL, backslash escapes for the characters that
//! would break the format; arrays in their `{...}` literal form. Rows are
//! written for `COPY ... FROM STDIN` ([`CopyRows`]) and read back from
//! `COPY ... TO STDOUT` ([`fields`], [`parse_array`]).

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

/// The fields of one row of `COPY ... TO STDOUT` (text format, one row per
/// message, ending in a newline): `None` for NULL, else the unescaped text.
pub(super) fn fields(row: &[u8]) -> Result<Vec<Option<String>>, Error> {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.split(|b| *b == b'\t')
        .map(|f| {
            if f == b"\\N" {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(f.len());
            let mut i = 0;
            while i < f.len() {
                if f[i] != b'\\' || i + 1 == f.len() {
                    out.push(f[i]);
                    i += 1;
                    continue;
                }
                let c = f[i + 1];
                i += 2;
                match c {
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(11),
                    b'0'..=b'7' => {
                        let mut v = u32::from(c - b'0');
                        for _ in 0..2 {
                            match f.get(i) {
                                Some(d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(v as u8);
                    }
                    b'x' => {
                        let mut v = 0u32;
                        for _ in 0..2 {
                            match f.get(i).and_then(|d| (*d as char).to_digit(16)) {
                                Some(d) => {
                                    v = v * 16 + d;
                                    i += 1;
                                }
                                None => break,
                            }
                        }
                        out.push(v as u8);
                    }
                    other => out.push(other),
                }
            }
            String::from_utf8(out)
                .map(Some)
                .map_err(|e| Error::Internal(format!("COPY output is not UTF-8: {e}")))
        })
        .collect()
}

/// A `text[]` literal as Postgres writes it (`{a,"b c"}`): elements are
/// quoted when they need it, with `"` and `\` escaped inside quotes. `None`
/// when it is not one.
pub(super) fn parse_array(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_output_reads_back() {
        let row =
            b"007\t\\N\ta\\tb\\\\c\\nd\\011\\x41\t{\"1 rue A\",\"say \\\\\"hi\\\\\"\",x}\t{}\n";
        let f = fields(row).unwrap();
        assert_eq!(f[0].as_deref(), Some("007"));
        assert_eq!(f[1], None);
        assert_eq!(f[2].as_deref(), Some("a\tb\\c\nd\tA"));
        assert_eq!(
            parse_array(f[3].as_deref().unwrap()).unwrap(),
            ["1 rue A", "say \"hi\"", "x"]
        );
        assert_eq!(
            parse_array(f[4].as_deref().unwrap()).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(parse_array("{a,b"), None);
        // What CopyRows writes, fields() reads.
        let mut c = CopyRows::default();
        c.text("tab\there\\")
            .opt(None)
            .array(&["q\"uote".into(), "".into()]);
        c.end_row();
        let f = fields(&c.buf).unwrap();
        assert_eq!(f[0].as_deref(), Some("tab\there\\"));
        assert_eq!(f[1], None);
        assert_eq!(
            parse_array(f[2].as_deref().unwrap()).unwrap(),
            ["q\"uote", ""]
        );
    }

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
