//! Records from a CSV file that arrives in chunks of any size: the first
//! line decides the delimiter, then a parser on a blocking thread turns the
//! bytes into records, each decoded on its own (`reader::decode_cells`).
//! Bounded channels on both sides carry back-pressure from the consumer of
//! the records to the sender of the chunks.

use tokio::sync::mpsc;

use super::reader::{decode_cells, detect_delimiter, sniff_encoding};
use crate::domain::Error;

/// How much of the file is read to find the header line's delimiter when
/// no line ends sooner.
const PREFIX: usize = 64 * 1024;

/// Records parsed and not yet taken.
const RECORDS_BUFFERED: usize = 1024;

/// What the parser hands on.
#[derive(Debug)]
pub enum Parsed {
    /// A record and the line it starts on (1-based).
    Record(u64, Vec<String>),
    /// The file could not be read further (malformed, or its sender
    /// failed); nothing follows.
    Failed(String),
}

/// Chunks of a file: `Err` when its sender failed (the file must not be
/// read further), the channel's end when the file ended.
pub type Chunks = mpsc::Receiver<Result<Vec<u8>, Error>>;

/// Starts reading `chunks` as CSV. Waits for the header line (or 64 KiB)
/// to detect the delimiter; an error of the sender before that is returned.
pub async fn records(mut chunks: Chunks) -> Result<mpsc::Receiver<Parsed>, Error> {
    let mut prefix = Vec::new();
    while prefix.len() < PREFIX {
        let Some(chunk) = chunks.recv().await else {
            break;
        };
        let chunk = chunk?;
        prefix.extend_from_slice(&chunk);
        if chunk.contains(&b'\n') {
            break;
        }
    }
    // Only a byte-order mark is skipped here: encodings are decided record
    // by record.
    let (_, bom) = sniff_encoding(&prefix);
    let first = prefix.split_off(bom);
    let delimiter = detect_delimiter(&String::from_utf8_lossy(&first));
    let (tx, rx) = mpsc::channel(RECORDS_BUFFERED);
    tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            chunks,
            buf: first,
            pos: 0,
        };
        let mut csv = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(false)
            .from_reader(reader);
        let mut rec = csv::ByteRecord::new();
        loop {
            let parsed = match csv.read_byte_record(&mut rec) {
                Ok(false) => return,
                Ok(true) => {
                    let line = rec.position().map(|p| p.line()).unwrap_or(0);
                    Parsed::Record(line, decode_cells(rec.iter()))
                }
                Err(e) => Parsed::Failed(match e.kind() {
                    csv::ErrorKind::Io(io) => io.to_string(),
                    _ => e.to_string(),
                }),
            };
            let last = matches!(parsed, Parsed::Failed(_));
            if tx.blocking_send(parsed).is_err() || last {
                return; // nobody reads the records any more, or nothing follows
            }
        }
    });
    Ok(rx)
}

/// The chunks as a blocking `Read`, for the parser's thread.
struct ChunkReader {
    chunks: Chunks,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(chunks: Vec<Result<&'static [u8], Error>>) -> Vec<Parsed> {
        let (tx, rx) = mpsc::channel(16);
        for c in chunks {
            tx.send(c.map(<[u8]>::to_vec)).await.unwrap();
        }
        drop(tx);
        let mut records = records(rx).await.unwrap();
        let mut out = Vec::new();
        while let Some(p) = records.recv().await {
            out.push(p);
        }
        out
    }

    #[tokio::test]
    async fn lines_split_anywhere_are_read_whole_with_the_header_delimiter() {
        let out = read_all(vec![
            Ok(b"\xEF\xBB\xBFNOM;PR"),
            Ok(b"ENOM\nDupr\xC3"),
            Ok(b"\xA9;Zo\xC3\xA9\n\"a\nb\";c\n"),
        ])
        .await;
        let records: Vec<_> = out
            .iter()
            .map(|p| match p {
                Parsed::Record(line, cells) => (*line, cells.join("|")),
                Parsed::Failed(e) => panic!("{e}"),
            })
            .collect();
        assert_eq!(
            records,
            [
                (1, "NOM|PRENOM".to_owned()),
                (2, "Dupré|Zoé".to_owned()),
                (3, "a\nb|c".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_sender_stops_the_records_with_its_reason() {
        let out = read_all(vec![
            Ok(b"NOM,PRENOM\nA,B\n"),
            Err(Error::Unavailable("the client went away".into())),
            Ok(b"C,D\n"),
        ])
        .await;
        assert!(matches!(&out[1], Parsed::Record(2, _)));
        match &out[2] {
            Parsed::Failed(e) => assert!(e.contains("the client went away"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(out.len(), 3);
    }

    #[tokio::test]
    async fn a_sender_failing_before_the_header_line_is_an_error() {
        let (tx, rx) = mpsc::channel(2);
        tx.send(Ok(b"NOM;PRE".to_vec())).await.unwrap();
        tx.send(Err(Error::invalid(
            "options",
            "only the first message carries options",
        )))
        .await
        .unwrap();
        assert!(matches!(records(rx).await, Err(Error::Invalid(_))));
    }
}
