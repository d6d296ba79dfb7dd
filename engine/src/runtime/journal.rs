//! The journal of a live source in a checkpointed run: what makes a stream that cannot be read
//! twice (a socket, LSL) resumable.
//!
//! Every batch the live reader returns is appended to the journal (one `write` per batch, so a
//! killed process loses nothing it had read) before the runtime emits it. The journal then acts
//! as a file source: resuming skips the batches the checkpoint covers and replays the rest,
//! which were read after the checkpoint and before the crash, and only then reads live again;
//! event times go on from where the replay ended. So every row the engine read is processed
//! exactly once. What senders sent while the run was down is not read at all: it is lost
//! unless they send it again.
//!
//! Layout: `CHECKPOINT_DIR/journal/<source>.<worker>/seg-<batches>-<rows>-<time>.wal`, where
//! the three hex numbers are the counts and event time before the segment's first record. A
//! record is `len: u32 LE, crc32: u32 LE, postcard((time, Batch))`. A segment is closed after
//! [`SEGMENT_BYTES`]; whole segments that precede the newest durable checkpoint are removed.
//! A torn record at the very end (a crash inside `write`) ends the replay there.
//!
//! Beside each segment, `seg-….streams` lists the streams that had rows and no end before the
//! segment's first record (postcard `Vec<String>`), and `runs` counts the starts of the reader.
//! A resume follows the streams through the skipped and replayed records and hands the ones
//! still open, with the run's number, to the live reader ([`SourceReader::resume`]): their
//! connections died with the previous process.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::frame::Batch;
use crate::node::{SourceReader, SourceWaker};

/// Bytes after which a segment is closed and a new one begun.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The batches of this reader that the newest durable checkpoint covers (`None`: none yet).
pub type DurableBatches = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

/// Counts before a segment's first record (decoded from its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Base {
    batches: u64,
    rows: u64,
    /// One past the event time of the last batch before it (0 at the start).
    end_time: u64,
}

fn segment_name(b: Base) -> String {
    format!("seg-{:016x}-{:016x}-{:016x}.wal", b.batches, b.rows, b.end_time)
}

fn parse_segment(name: &str) -> Option<Base> {
    let mut it = name.strip_prefix("seg-")?.strip_suffix(".wal")?.split('-');
    let mut next = || u64::from_str_radix(it.next()?, 16).ok();
    Some(Base {
        batches: next()?,
        rows: next()?,
        end_time: next()?,
    })
}

/// The file beside a segment that lists the streams open before its first record.
fn streams_path(segment: &Path) -> PathBuf {
    segment.with_extension("streams")
}

/// The streams open before `segment` (none when its list is missing: journals written before
/// the lists existed).
fn read_streams(dir: &Path, segment: &Path) -> Result<HashSet<Arc<str>>> {
    let path = streams_path(segment);
    match std::fs::read(&path) {
        Ok(bytes) => postcard::from_bytes::<Vec<String>>(&bytes)
            .map(|v| v.into_iter().map(Arc::from).collect())
            .map_err(|e| journal_err(dir, format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(journal_err(dir, format!("cannot read {}: {e}", path.display()))),
    }
}

/// Counts this start in `dir/runs` and returns how many starts came before it.
fn count_run(dir: &Path) -> Result<u64> {
    let path = dir.join("runs");
    let before = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|e| journal_err(dir, format!("{} is corrupt: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(journal_err(dir, format!("cannot read {}: {e}", path.display()))),
    };
    crate::files::write_atomic(&path, (before + 1).to_string().as_bytes())
        .map_err(|e| journal_err(dir, format!("cannot write {}: {e}", path.display())))?;
    Ok(before)
}

fn journal_err(dir: &Path, message: String) -> EngineError {
    EngineError::Checkpoint(format!("journal {}: {message}", dir.display()))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(Base, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(journal_err(dir, format!("cannot list it: {e}"))),
    };
    let mut v: Vec<(Base, PathBuf)> = entries
        .flatten()
        .filter_map(|e| parse_segment(&e.file_name().to_string_lossy()).map(|b| (b, e.path())))
        .collect();
    v.sort_by_key(|(b, _)| b.batches);
    Ok(v)
}

/// Reads records from the journal's segments, in order.
struct Replay {
    queue: std::collections::VecDeque<(Base, PathBuf)>,
    current: Option<(PathBuf, BufReader<File>)>,
}

impl Replay {
    /// The next record; `None` at the end of the journal (or at a torn record at its end).
    fn next(&mut self, dir: &Path) -> Result<Option<(u64, Batch)>> {
        loop {
            if self.current.is_none() {
                let Some((_, path)) = self.queue.pop_front() else {
                    return Ok(None);
                };
                let f = File::open(&path).map_err(|e| journal_err(dir, format!("cannot open {}: {e}", path.display())))?;
                self.current = Some((path, BufReader::new(f)));
            }
            let (path, r) = self.current.as_mut().unwrap();
            match read_record(r) {
                Ok(Some(rec)) => return Ok(Some(rec)),
                Ok(None) => self.current = None,
                Err(why) if self.queue.is_empty() => {
                    tracing::warn!(
                        "{}: {why} at its end (a crash while writing it); the replay ends there",
                        path.display()
                    );
                    self.current = None;
                    return Ok(None);
                }
                Err(why) => return Err(journal_err(dir, format!("{} is corrupt: {why}", path.display()))),
            }
        }
    }
}

/// One record, `Ok(None)` at a clean end of the segment, `Err` for a torn or damaged one.
fn read_record(r: &mut impl Read) -> std::result::Result<Option<(u64, Batch)>, String> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("a record header is cut short".into()),
            Ok(n) => got += n,
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|_| "a record is cut short".to_string())?;
    if crc32fast::hash(&body) != crc {
        return Err("a record fails its checksum".into());
    }
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| format!("a record does not decode: {e}"))
}

/// Signal sources count samples from 0 in every run and use the sample index as event time:
/// after a resume, their sample indices move with the times (other indices are left alone).
fn shift_sample_index(batch: &mut Batch, time: u64, offset: u64) {
    let index = match batch {
        Batch::Dense(f) => &mut f.index,
        Batch::Sparse(f) => &mut f.index,
        Batch::Table(_) | Batch::End(_) => return,
    };
    if let crate::frame::RowIndex::Samples(s) = index {
        if offset > 0 && s.first() == Some(&(time as i64)) {
            s.iter_mut().for_each(|v| *v += offset as i64);
        }
    }
}

/// A live reader behind its journal (see the module docs).
pub(super) struct JournaledReader {
    inner: Box<dyn SourceReader>,
    dir: PathBuf,
    durable: DurableBatches,
    /// Records still to replay before reading live.
    replay: Option<Replay>,
    writer: Option<(File, u64)>,
    /// Batches and rows returned so far, and one past the latest event time.
    batches: u64,
    rows: u64,
    end_time: u64,
    /// Event time of the last batch returned: a lower bound on the next one while replaying.
    last_time: u64,
    /// Added to the live reader's times, which start at 0 in every run.
    offset: Option<u64>,
    /// Written since the last [`SourceReader::sync`].
    dirty: bool,
    /// Records replayed after the checkpoint (for the log).
    replayed: u64,
    /// The next record to replay, read ahead so `ready` knows when the replay is over.
    pending: Option<(u64, Batch)>,
    /// An error met while reading ahead, returned by the next `next_batch`.
    failed: Option<EngineError>,
    /// The checkpoint it resumed from says the stream had ended: it stays ended.
    ended: bool,
    /// Starts of this reader before this one (the `runs` file).
    run: u64,
    /// Streams with rows and no end so far.
    open_streams: HashSet<Arc<str>>,
}

impl JournaledReader {
    /// Journals `inner` into `dir` (created when missing); a resumed run replays what is there.
    pub(super) fn open(inner: Box<dyn SourceReader>, dir: PathBuf, durable: DurableBatches) -> Result<JournaledReader> {
        std::fs::create_dir_all(&dir).map_err(|e| journal_err(&dir, format!("cannot create it: {e}")))?;
        let queue = segments(&dir)?.into();
        let run = count_run(&dir)?;
        Ok(JournaledReader {
            inner,
            dir,
            durable,
            replay: Some(Replay { queue, current: None }),
            writer: None,
            batches: 0,
            rows: 0,
            end_time: 0,
            last_time: 0,
            offset: None,
            dirty: false,
            replayed: 0,
            pending: None,
            failed: None,
            ended: false,
            run,
            open_streams: HashSet::new(),
        })
    }

    /// The checkpoint resumed from says the stream had ended: nothing more is read.
    pub(super) fn end(&mut self) {
        self.ended = true;
        self.replay = None;
    }

    /// While replaying: reads the next record ahead, or goes live when there is none.
    fn fill(&mut self) -> Result<()> {
        if self.pending.is_none() {
            if let Some(r) = self.replay.as_mut() {
                match r.next(&self.dir)? {
                    Some(rec) => self.pending = Some(rec),
                    None => self.go_live(),
                }
            }
        }
        Ok(())
    }

    fn take(&mut self, time: u64, batch: &Batch) {
        self.batches += 1;
        self.rows += batch.rows() as u64;
        self.end_time = self.end_time.max(time + 1);
        self.last_time = time;
        match batch {
            Batch::End(end) => {
                self.open_streams.remove(&end.stream);
            }
            Batch::Dense(_) | Batch::Sparse(_) if !self.open_streams.contains(batch.stream()) => {
                self.open_streams.insert(batch.stream().clone());
            }
            _ => {}
        }
    }

    /// Appends one record, starting a new segment first when there is none or it is full.
    fn append(&mut self, time: u64, batch: &Batch) -> Result<()> {
        let body =
            postcard::to_stdvec(&(time, batch)).map_err(|e| journal_err(&self.dir, format!("cannot encode a batch: {e}")))?;
        if self.writer.as_ref().is_none_or(|(_, n)| *n >= SEGMENT_BYTES) {
            self.rotate()?;
        }
        let mut rec = Vec::with_capacity(8 + body.len());
        rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        rec.extend_from_slice(&body);
        let (f, n) = self.writer.as_mut().unwrap();
        f.write_all(&rec)
            .map_err(|e| journal_err(&self.dir, format!("cannot append (disk full?): {e}")))?;
        *n += rec.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Closes the current segment (synced), begins the next, and removes the segments the newest
    /// durable checkpoint no longer needs.
    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        let base = Base {
            batches: self.batches,
            rows: self.rows,
            end_time: self.end_time,
        };
        let path = self.dir.join(segment_name(base));
        let open: Vec<&str> = self.open_streams.iter().map(|s| &**s).collect();
        let list = postcard::to_stdvec(&open).map_err(|e| journal_err(&self.dir, format!("cannot encode streams: {e}")))?;
        crate::files::write_atomic(&streams_path(&path), &list).map_err(|e| {
            journal_err(
                &self.dir,
                format!("cannot write {} (disk full?): {e}", streams_path(&path).display()),
            )
        })?;
        let f = File::create(&path).map_err(|e| journal_err(&self.dir, format!("cannot create {}: {e}", path.display())))?;
        self.writer = Some((f, 0));
        if let Some(durable) = (self.durable)() {
            let segs = segments(&self.dir)?;
            for pair in segs.windows(2) {
                if pair[1].0.batches <= durable {
                    let _ = std::fs::remove_file(&pair[0].1);
                    let _ = std::fs::remove_file(streams_path(&pair[0].1));
                }
            }
        }
        Ok(())
    }

    /// Leaves the replay: the live reader's times go on from the journal's end, and it learns
    /// which streams the previous run left open.
    fn go_live(&mut self) {
        if self.replay.take().is_some() {
            if self.replayed > 0 {
                tracing::info!(
                    "{}: replayed {} batches read after the checkpoint; reading live again",
                    self.dir.display(),
                    self.replayed
                );
            }
            let mut open: Vec<Arc<str>> = self.open_streams.iter().cloned().collect();
            open.sort();
            self.inner.resume(self.run, open);
        }
        self.offset.get_or_insert(self.end_time);
    }
}

impl SourceReader for JournaledReader {
    fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.ended {
            return Ok(None);
        }
        self.fill()?;
        if let Some((time, batch)) = self.pending.take() {
            self.take(time, &batch);
            self.replayed += 1;
            return Ok(Some((time, batch)));
        }
        let offset = self.offset.unwrap_or(0);
        let Some((t, mut batch)) = self.inner.next_batch()? else {
            return Ok(None);
        };
        shift_sample_index(&mut batch, t, offset);
        let time = t + offset;
        self.append(time, &batch)?;
        self.take(time, &batch);
        Ok(Some((time, batch)))
    }

    fn next_time(&self) -> Option<u64> {
        if self.ended {
            return None;
        }
        if let Some((t, _)) = &self.pending {
            return Some(*t);
        }
        if self.replay.is_some() {
            return Some(self.last_time);
        }
        self.inner.next_time().map(|t| t + self.offset.unwrap_or(0))
    }

    fn ready(&mut self) -> bool {
        if self.ended || self.failed.is_some() {
            return true;
        }
        if let Err(e) = self.fill() {
            self.failed = Some(e);
            return true;
        }
        self.pending.is_some() || self.inner.ready()
    }

    fn set_waker(&mut self, waker: SourceWaker) -> bool {
        self.inner.set_waker(waker)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    /// Resuming: skips the `batches` the checkpoint covers, from the newest segment that starts
    /// at or before them. Returns the rows in all of them (the checkpoint's count).
    fn skip_batches(&mut self, batches: u64) -> Result<u64> {
        let r = self.replay.as_mut().expect("skipping happens before reading");
        while r.queue.len() > 1 && r.queue[1].0.batches <= batches {
            r.queue.pop_front();
        }
        match r.queue.front() {
            Some((base, path)) if base.batches <= batches => {
                (self.batches, self.rows, self.end_time) = (base.batches, base.rows, base.end_time);
                self.last_time = base.end_time.saturating_sub(1);
                self.open_streams = read_streams(&self.dir, path)?;
            }
            _ if batches == 0 => return Ok(0),
            _ => {
                return Err(journal_err(
                    &self.dir,
                    format!("it does not hold the {batches} batches the checkpoint covers (removed?)"),
                ))
            }
        }
        while self.batches < batches {
            let r = self.replay.as_mut().expect("still replaying while skipping");
            let Some((time, batch)) = r.next(&self.dir)? else {
                return Err(journal_err(
                    &self.dir,
                    format!("it ends after {} batches; the checkpoint covers {batches}", self.batches),
                ));
            };
            self.take(time, &batch);
        }
        Ok(self.rows)
    }

    fn sync(&mut self) -> Result<()> {
        if self.dirty {
            if let Some((f, _)) = &self.writer {
                f.sync_data()
                    .map_err(|e| journal_err(&self.dir, format!("cannot sync: {e}")))?;
            }
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, RowIndex};
    use crate::schema::Schema;

    /// A live stream of `n` two-row batches at times 0, 2, 4, ... holding their time as values.
    struct Counter {
        next: u64,
        n: u64,
    }

    fn batch(t: u64) -> Batch {
        let schema = Arc::new(Schema::signal(&["a"], "uV", 100.0));
        let index = RowIndex::Samples(vec![t as i64, t as i64 + 1]);
        Batch::Dense(Frame::new("s".into(), schema, index, vec![t as f32, t as f32 + 0.5]).unwrap())
    }

    impl SourceReader for Counter {
        fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
            if self.next >= self.n * 2 {
                return Ok(None);
            }
            let t = self.next;
            self.next += 2;
            Ok(Some((t, batch(t))))
        }
        fn next_time(&self) -> Option<u64> {
            (self.next < self.n * 2).then_some(self.next)
        }
    }

    fn never() -> DurableBatches {
        Arc::new(|| None)
    }

    fn read_all(r: &mut JournaledReader) -> Vec<(u64, Batch)> {
        let mut v = Vec::new();
        while r.ready() {
            match r.next_batch().unwrap() {
                Some(b) => v.push(b),
                None => break,
            }
        }
        v
    }

    /// A resumed journal replays what followed the checkpoint, then reads live with event times
    /// going on from the replay's end.
    #[test]
    fn a_resume_replays_the_batches_after_the_checkpoint_then_goes_live() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("j");
        let mut first = JournaledReader::open(Box::new(Counter { next: 0, n: 5 }), j.clone(), never()).unwrap();
        let got = read_all(&mut first);
        assert_eq!(got.len(), 5);
        first.sync().unwrap();
        drop(first);
        // Killed after a checkpoint covering 2 batches (4 rows); a new live stream of 3 batches.
        let mut second = JournaledReader::open(Box::new(Counter { next: 0, n: 3 }), j.clone(), never()).unwrap();
        assert_eq!(second.skip_batches(2).unwrap(), 4);
        let got = read_all(&mut second);
        let times: Vec<u64> = got.iter().map(|(t, _)| *t).collect();
        // Replayed: times 4, 6, 8 (batches 3..5); live again from 9 (the journal's end) on.
        assert_eq!(times, vec![4, 6, 8, 9, 11, 13]);
        assert_eq!(got[0].1, batch(4));
        assert_eq!(got[2].1, batch(8));
        let Batch::Dense(live) = &got[3].1 else { panic!("dense") };
        assert_eq!(live.data, vec![0.0, 0.5], "live batches keep their values");
        assert_eq!(
            live.index,
            RowIndex::Samples(vec![9, 10]),
            "their sample indices go on with the event times"
        );
        assert_eq!(second.replayed, 3);
        drop(second);
        // A third run sees both runs' batches in the journal, in order.
        let mut third = JournaledReader::open(Box::new(Counter { next: 0, n: 0 }), j, never()).unwrap();
        assert_eq!(third.skip_batches(5).unwrap(), 10);
        let times: Vec<u64> = read_all(&mut third).iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![9, 11, 13]);
    }

    /// A record torn by a crash inside `write` ends the replay; anything else damaged is an error.
    #[test]
    fn a_torn_tail_ends_the_replay_and_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("j");
        let mut w = JournaledReader::open(Box::new(Counter { next: 0, n: 4 }), j.clone(), never()).unwrap();
        read_all(&mut w);
        drop(w);
        let (_, seg) = segments(&j).unwrap().pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 3).unwrap();
        let mut r = JournaledReader::open(Box::new(Counter { next: 0, n: 0 }), j.clone(), never()).unwrap();
        r.skip_batches(1).unwrap();
        assert_eq!(read_all(&mut r).len(), 2, "batches 2 and 3 replay; the torn 4th does not");
        drop(r);
        // Skipping past the torn end is an error naming the journal.
        let mut r = JournaledReader::open(Box::new(Counter { next: 0, n: 0 }), j.clone(), never()).unwrap();
        let e = r.skip_batches(4).unwrap_err().to_string();
        assert!(e.contains("journal") && e.contains("checkpoint covers 4"), "{e}");
        // A flipped byte in the middle of a segment that is not the last one is corruption.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[12] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        std::fs::write(
            j.join(segment_name(Base {
                batches: 9,
                rows: 18,
                end_time: 99,
            })),
            b"",
        )
        .unwrap();
        let mut r = JournaledReader::open(Box::new(Counter { next: 0, n: 0 }), j, never()).unwrap();
        let e = r.skip_batches(0).and_then(|_| r.next_batch()).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
    }

    /// Segments before the newest durable checkpoint are removed when a segment is closed; a
    /// resume then starts from the newest segment at or before the checkpoint.
    #[test]
    fn segments_the_durable_checkpoint_covers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("j");
        let durable = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let d2 = durable.clone();
        let query: DurableBatches = Arc::new(move || {
            let v = d2.load(std::sync::atomic::Ordering::Relaxed);
            (v != u64::MAX).then_some(v)
        });
        let mut w = JournaledReader::open(Box::new(Counter { next: 0, n: 10 }), j.clone(), query).unwrap();
        for i in 0..10u64 {
            w.next_batch().unwrap().unwrap();
            if i % 3 == 2 {
                w.writer = None; // close the segment: the next append begins a new one
            }
            if i == 7 {
                durable.store(7, std::sync::atomic::Ordering::Relaxed);
            }
        }
        drop(w);
        let bases: Vec<u64> = segments(&j).unwrap().iter().map(|(b, _)| b.batches).collect();
        // Segments began at 0, 3, 6, 9; at the rotation to 9 the checkpoint covered 7, so the
        // segments at 0 and 3 (whole before 6 <= 7) went.
        assert_eq!(bases, vec![6, 9]);
        let mut r = JournaledReader::open(Box::new(Counter { next: 0, n: 0 }), j.clone(), never()).unwrap();
        assert_eq!(r.skip_batches(7).unwrap(), 14);
        let times: Vec<u64> = read_all(&mut r).iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![14, 16, 18]);
        let mut r = JournaledReader::open(Box::new(Counter { next: 0, n: 0 }), j, never()).unwrap();
        let e = r.skip_batches(2).unwrap_err().to_string();
        assert!(e.contains("does not hold the 2 batches"), "{e}");
    }

    /// What each resume told a reader: its run and the streams left open.
    type Resumes = Arc<std::sync::Mutex<Vec<(u64, Vec<Arc<str>>)>>>;

    /// A live reader of scripted batches that records what its resume told it.
    struct Scripted {
        batches: std::collections::VecDeque<Batch>,
        next: u64,
        resumed: Resumes,
    }

    impl SourceReader for Scripted {
        fn next_batch(&mut self) -> Result<Option<(u64, Batch)>> {
            Ok(self.batches.pop_front().map(|b| {
                let t = self.next;
                self.next += b.rows() as u64;
                (t, b)
            }))
        }
        fn next_time(&self) -> Option<u64> {
            (!self.batches.is_empty()).then_some(self.next)
        }
        fn resume(&mut self, run: u64, open_streams: Vec<Arc<str>>) {
            self.resumed.lock().unwrap().push((run, open_streams));
        }
    }

    fn rows_of(stream: &str) -> Batch {
        let schema = Arc::new(Schema::signal(&["a"], "uV", 100.0));
        Batch::Dense(Frame::new(stream.into(), schema, RowIndex::Samples(vec![0]), vec![1.0]).unwrap())
    }

    fn end_of(stream: &str) -> Batch {
        let schema = Arc::new(Schema::signal(&["a"], "uV", 100.0));
        Batch::End(crate::frame::StreamEnd {
            stream: stream.into(),
            schema,
        })
    }

    /// Each start is counted, and a resume tells the live reader which streams had rows and no
    /// end where the previous run stopped: followed through the segment lists, the skipped and
    /// the replayed records, whatever segments the checkpoint let go.
    #[test]
    fn a_resume_tells_the_reader_its_run_and_the_streams_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("j");
        let resumed: Resumes = Arc::default();
        let scripted = |batches: Vec<Batch>| Scripted {
            batches: batches.into(),
            next: 0,
            resumed: resumed.clone(),
        };
        let first = vec![
            rows_of("a"),
            rows_of("b"),
            end_of("a"),
            rows_of("c"),
            rows_of("d"),
            end_of("c"),
        ];
        let mut w = JournaledReader::open(Box::new(scripted(first)), j.clone(), never()).unwrap();
        for i in 0..6 {
            w.next_batch().unwrap().unwrap();
            if i == 2 {
                w.writer = None; // a new segment after `end(a)`: its list says b is open
            }
        }
        assert_eq!(resumed.lock().unwrap().as_slice(), &[(0, vec![])], "the first start");
        drop(w);
        // The segment at 3 now holds the first run's rest; drop the first segment as a durable
        // checkpoint at 4 would have, and resume there: b from the list, d from the replay.
        let segs = segments(&j).unwrap();
        assert_eq!(segs.len(), 2);
        std::fs::remove_file(&segs[0].1).unwrap();
        let mut r = JournaledReader::open(Box::new(scripted(vec![rows_of("e")])), j.clone(), never()).unwrap();
        r.skip_batches(4).unwrap();
        let got = read_all(&mut r);
        assert_eq!(got.len(), 2 + 1, "2 replayed, 1 live");
        assert_eq!(
            resumed.lock().unwrap().last().unwrap(),
            &(1, vec![Arc::from("b"), Arc::from("d")])
        );
        drop(r);
        // A journal whose segments have no lists (written before them) starts from none open.
        for (_, seg) in segments(&j).unwrap() {
            std::fs::remove_file(streams_path(&seg)).unwrap();
        }
        let mut r = JournaledReader::open(Box::new(scripted(vec![])), j.clone(), never()).unwrap();
        r.skip_batches(6).unwrap();
        read_all(&mut r);
        assert_eq!(resumed.lock().unwrap().last().unwrap(), &(2, vec![Arc::from("e")]));
        // A damaged list is an error naming it.
        let seg = segments(&j).unwrap()[0].1.clone();
        std::fs::write(streams_path(&seg), [0xff, 0xff, 0xff]).unwrap();
        let mut r = JournaledReader::open(Box::new(scripted(vec![])), j, never()).unwrap();
        let e = r.skip_batches(4).unwrap_err().to_string();
        assert!(e.contains(".streams is corrupt"), "{e}");
    }
}
