//! Records from a CSV file that arrives in chunks of any size: the first
//! line decides the delimiter, then a push parser (`csv_core`) on a blocking
//! thread turns the bytes into records, each decoded on its own
//! (`reader::decode_cells`). Bounded channels on both sides carry
//! back-pressure from the consumer of the records to the sender of the
//! chunks.
//!
//! Memory is bounded whatever the file holds: a record is parsed into a
//! buffer of [`MAX_RECORD_BYTES`] (and at most [`MAX_CELLS`] cells); a longer
//! one is skipped to its end without being kept, and reported as
//! [`Parsed::TooLong`]. Line numbers are physical lines of the file, whatever
//! its line endings (`\n`, `\r\n`, `\r`).

use tokio::sync::mpsc;

use super::reader::{decode_cells, detect_delimiter, sniff_encoding};
use crate::domain::Error;

/// How much of the file is read to find the header line's delimiter when
/// no line ends sooner (and to tell text from binary).
const PREFIX: usize = 64 * 1024;

/// How long the start of a file may take to arrive.
const PREFIX_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long more of the first 64 KiB is waited for once a line has ended.
const LINE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Records parsed and not yet taken.
const RECORDS_BUFFERED: usize = 1024;

/// The longest record read (its cells' bytes); longer ones are that line's
/// error.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// The most cells a record may have.
pub const MAX_CELLS: usize = 1024;

/// What the parser hands on.
#[derive(Debug)]
pub enum Parsed {
    /// A record, the physical line it starts on (1-based) and the offset
    /// in the file just past it.
    Record {
        line: u64,
        end: u64,
        cells: Vec<String>,
    },
    /// A record over [`MAX_RECORD_BYTES`] or [`MAX_CELLS`], skipped.
    TooLong { line: u64, end: u64 },
    /// The file could not be read further (its sender failed); nothing
    /// follows.
    Failed(Error),
}

/// Chunks of a file: `Err` when its sender failed (the file must not be
/// read further), the channel's end when the file ended.
pub type Chunks = mpsc::Receiver<Result<Vec<u8>, Error>>;

/// Why a file is refused whole from its first bytes, if it is: UTF-16 (the
/// CSV structure would be unreadable), or binary data.
pub fn not_text(prefix: &[u8]) -> Option<&'static str> {
    let utf16_bom = prefix.starts_with(b"\xFF\xFE") || prefix.starts_with(b"\xFE\xFF");
    let sample = &prefix[..prefix.len().min(4096)];
    let nuls = sample.iter().filter(|b| **b == 0).count();
    if utf16_bom || (sample.len() >= 16 && nuls * 3 >= sample.len()) {
        return Some(
            "is UTF-16 text, which imports do not read: save it as UTF-8 \
             (in Excel: \"CSV UTF-8 (comma delimited)\") or as CSV (Windows-1252)",
        );
    }
    let controls = prefix
        .iter()
        .filter(|b| (**b < 0x20 && !matches!(**b, b'\t' | b'\n' | b'\r')) || **b == 0x7F)
        .count();
    if controls >= 8 && controls * 20 > prefix.len() {
        return Some("is not a text file (binary data): export it from the spreadsheet as CSV");
    }
    None
}

/// Starts reading `chunks` as CSV. Waits for the header line (or 64 KiB)
/// to detect the delimiter and to refuse a file that is not text; an error
/// of the sender before that is returned.
pub async fn records(mut chunks: Chunks) -> Result<mpsc::Receiver<Parsed>, Error> {
    // The first 64 KiB (or the whole file, when shorter) are read before
    // anything is decided, so that the verdicts (text or not, delimiter) do
    // not depend on how a file sent at once was cut into chunks.
    let mut prefix = Vec::new();
    while prefix.len() < PREFIX {
        // Once a line has ended, a client that pauses is not waited for: its
        // header line is there.
        let has_line = prefix.iter().any(|b| matches!(b, b'\n' | b'\r'));
        let wait = if has_line { LINE_WAIT } else { PREFIX_WAIT };
        let chunk = match tokio::time::timeout(wait, chunks.recv()).await {
            Ok(Some(chunk)) => chunk?,
            Ok(None) => break,
            Err(_) if has_line => break,
            Err(_) => {
                return Err(Error::invalid(
                    "file",
                    format!(
                        "reading stopped: no data from the client for {} s",
                        PREFIX_WAIT.as_secs()
                    ),
                ))
            }
        };
        prefix.extend_from_slice(&chunk);
    }
    if let Some(why) = not_text(&prefix) {
        return Err(Error::invalid("file", why));
    }
    // Only a byte-order mark is skipped here: encodings are decided record
    // by record.
    let (_, bom) = sniff_encoding(&prefix);
    let first = prefix.split_off(bom);
    let delimiter = detect_delimiter(&String::from_utf8_lossy(&first));
    let (tx, rx) = mpsc::channel(RECORDS_BUFFERED);
    tokio::task::spawn_blocking(move || {
        let parser = Parser::new(delimiter, bom as u64);
        parser.run(chunks, first, &tx);
    });
    Ok(rx)
}

/// Counts physical line breaks: `\n`, `\r\n` and a lone `\r` are one each.
#[derive(Debug, Default)]
struct Breaks {
    count: u64,
    after_cr: bool,
}

impl Breaks {
    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            match b {
                b'\r' => self.count += 1,
                b'\n' if !self.after_cr => self.count += 1,
                _ => {}
            }
            self.after_cr = *b == b'\r';
        }
    }
}

/// The push parser's state between chunks.
struct Parser {
    core: csv_core::Reader,
    /// The cells of the record being read, and where each ends.
    out: Vec<u8>,
    ends: Vec<usize>,
    outlen: usize,
    nends: usize,
    /// The record being read is over the limits: it is skipped.
    too_long: bool,
    /// Line breaks of the file so far, and of the record being read
    /// (inside quoted cells).
    file_breaks: Breaks,
    record_breaks: Breaks,
    /// Bytes of the file consumed so far.
    offset: u64,
}

impl Parser {
    fn new(delimiter: u8, offset: u64) -> Self {
        Self {
            core: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            // One byte more than the limit: csv_core reports a full buffer
            // only once a byte does not fit.
            out: vec![0; MAX_RECORD_BYTES + 1],
            ends: vec![0; MAX_CELLS],
            outlen: 0,
            nends: 0,
            too_long: false,
            file_breaks: Breaks::default(),
            record_breaks: Breaks::default(),
            offset,
        }
    }

    /// Parses every chunk, `first` being what was already received.
    fn run(mut self, mut chunks: Chunks, first: Vec<u8>, tx: &mpsc::Sender<Parsed>) {
        let mut input = first;
        let mut pos = 0;
        let mut eof = false;
        loop {
            if pos >= input.len() && !eof {
                match chunks.blocking_recv() {
                    Some(Ok(chunk)) => {
                        input = chunk;
                        pos = 0;
                        continue;
                    }
                    Some(Err(e)) => {
                        let _ = tx.blocking_send(Parsed::Failed(e));
                        return;
                    }
                    None => eof = true,
                }
            }
            let rest = if eof { &[][..] } else { &input[pos..] };
            let Some(parsed) = self.step(rest, &mut pos) else {
                continue;
            };
            let end = matches!(parsed, Step::End);
            if let Step::Parsed(p) = parsed {
                if tx.blocking_send(p).is_err() {
                    return; // nobody reads the records any more
                }
            }
            if end {
                return;
            }
        }
    }

    /// One call of the push parser on `input` (empty at the end of the
    /// file); `pos` advances by what it consumed.
    fn step(&mut self, input: &[u8], pos: &mut usize) -> Option<Step> {
        use csv_core::ReadRecordResult as R;
        let (res, nin, nout, nend) = self.core.read_record(
            input,
            &mut self.out[self.outlen..],
            &mut self.ends[self.nends..],
        );
        self.file_breaks.feed(&input[..nin]);
        self.record_breaks
            .feed(&self.out[self.outlen..self.outlen + nout]);
        *pos += nin;
        self.offset += nin as u64;
        self.outlen += nout;
        self.nends += nend;
        match res {
            R::InputEmpty => None,
            R::OutputFull | R::OutputEndsFull => {
                // Over the limits: what follows of the record is read into
                // the same buffers and dropped.
                self.too_long = true;
                self.outlen = 0;
                self.nends = 0;
                None
            }
            R::Record => Some(Step::Parsed(self.record(!input.is_empty()))),
            R::End => Some(Step::End),
        }
    }

    /// The record just read, and a fresh start for the next one.
    fn record(&mut self, terminated: bool) -> Parsed {
        // Its last line is the one its terminator ends (already counted),
        // or, at the end of the file, the one after the last break.
        let last = if terminated {
            self.file_breaks.count
        } else {
            self.file_breaks.count + 1
        };
        let line = last.saturating_sub(self.record_breaks.count).max(1);
        let end = self.offset;
        let over = std::mem::take(&mut self.too_long) || self.outlen > MAX_RECORD_BYTES;
        let parsed = if over {
            Parsed::TooLong { line, end }
        } else {
            let ends = &self.ends[..self.nends];
            let out = &self.out;
            let starts = std::iter::once(0).chain(ends.iter().copied());
            let cells = starts.zip(ends.iter().copied()).map(|(s, e)| &out[s..e]);
            Parsed::Record {
                line,
                end,
                cells: decode_cells(cells),
            }
        };
        self.outlen = 0;
        self.nends = 0;
        self.record_breaks = Breaks::default();
        parsed
    }
}

enum Step {
    Parsed(Parsed),
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(chunks: Vec<Result<&'static [u8], Error>>) -> Vec<Parsed> {
        read_owned(chunks.into_iter().map(|c| c.map(<[u8]>::to_vec)).collect()).await
    }

    async fn read_owned(chunks: Vec<Result<Vec<u8>, Error>>) -> Vec<Parsed> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(c).await.is_err() {
                    return;
                }
            }
        });
        let mut records = records(rx).await.unwrap();
        let mut out = Vec::new();
        while let Some(p) = records.recv().await {
            out.push(p);
        }
        out
    }

    fn lines(out: &[Parsed]) -> Vec<(u64, String)> {
        out.iter()
            .map(|p| match p {
                Parsed::Record { line, cells, .. } => (*line, cells.join("|")),
                Parsed::TooLong { line, .. } => (*line, "<too long>".into()),
                Parsed::Failed(e) => panic!("{e}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn lines_split_anywhere_are_read_whole_with_the_header_delimiter() {
        let out = read_all(vec![
            Ok(b"\xEF\xBB\xBFNOM;PR"),
            Ok(b"ENOM\nDupr\xC3"),
            Ok(b"\xA9;Zo\xC3\xA9\n\"a\nb\";c\n"),
        ])
        .await;
        assert_eq!(
            lines(&out),
            [
                (1, "NOM|PRENOM".to_owned()),
                (2, "Dupré|Zoé".to_owned()),
                (3, "a\nb|c".to_owned())
            ]
        );
        // Each record says where it ends in the file (BOM included).
        let ends: Vec<u64> = out
            .iter()
            .map(|p| match p {
                Parsed::Record { end, .. } => *end,
                _ => 0,
            })
            .collect();
        assert_eq!(ends, [14, 26, 34]);
    }

    #[tokio::test]
    async fn line_numbers_are_physical_lines_whatever_the_endings() {
        for eol in ["\n", "\r\n", "\r"] {
            let file = format!("A;B{eol}1;2{eol}{eol}\"x{eol}y\";3{eol}4;5{eol}6;7");
            let out = read_owned(vec![Ok(file.into_bytes())]).await;
            let got: Vec<u64> = lines(&out).into_iter().map(|(l, _)| l).collect();
            assert_eq!(got, [1, 2, 4, 6, 7], "line endings {eol:?}");
        }
    }

    #[tokio::test]
    async fn a_record_over_the_limit_is_skipped_whole_and_the_next_one_read() {
        let mut file = b"A,B\n1,".to_vec();
        file.extend(std::iter::repeat_n(b'x', 3 * MAX_RECORD_BYTES));
        file.extend_from_slice(b"\n\"unclosed,");
        let chunks = file
            .chunks(10_000)
            .map(|c| Ok(c.to_vec()))
            .collect::<Vec<_>>();
        let mut chunks = chunks;
        chunks.push(Ok(b"2\n3,4\n".to_vec()));
        let out = read_owned(chunks).await;
        let got = lines(&out);
        assert_eq!(got[0], (1, "A|B".to_owned()));
        assert_eq!(got[1], (2, "<too long>".to_owned()));
        // An opening quote never closed: the rest of the file is one cell.
        assert_eq!(got[2].0, 3);
        assert_eq!(got.len(), 3);
        // The same quote with megabytes behind it: still one bounded record.
        let mut file = b"A,B\n\"".to_vec();
        file.extend(std::iter::repeat_n(b'y', 2 * MAX_RECORD_BYTES));
        let out = read_owned(vec![Ok(file)]).await;
        assert_eq!(lines(&out)[1], (2, "<too long>".to_owned()));
    }

    #[tokio::test]
    async fn tabs_delimit_and_text_that_is_not_csv_is_refused_whole() {
        let out = read_all(vec![Ok(b"NOM\tPRENOM\nA\tB\n")]).await;
        assert_eq!(lines(&out)[1], (2, "A|B".to_owned()));
        for file in [
            b"\xFF\xFEN\0O\0M\0;\0P\0\n\0".to_vec(),
            "NOM;PRENOM\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ] {
            let (tx, rx) = mpsc::channel(2);
            tx.send(Ok(file)).await.unwrap();
            drop(tx);
            match records(rx).await {
                Err(Error::Invalid(v)) => assert_eq!(v.0[0].field, "file"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_failing_sender_stops_the_records_with_its_error() {
        let mut first = b"NOM,PRENOM\n".to_vec();
        for i in 0..PREFIX / 4 {
            first.extend_from_slice(format!("A{i},B\n").as_bytes());
        }
        let lines = 1 + PREFIX / 4;
        let out = read_owned(vec![
            Ok(first),
            Err(Error::Unavailable("the client went away".into())),
            Ok(b"C,D\n".to_vec()),
        ])
        .await;
        assert!(matches!(&out[1], Parsed::Record { line: 2, .. }));
        match &out[lines] {
            Parsed::Failed(Error::Unavailable(e)) => assert!(e.contains("went away"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(out.len(), lines + 1);
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
