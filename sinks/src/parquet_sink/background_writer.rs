//! A Parquet writer on a thread of its own: encoding and compressing a row group (and writing
//! it out) is most of a Parquet sink's work, and on its own thread it runs beside the worker
//! that produces the next batches instead of between them.
//!
//! Batches go to the thread in order through a short queue (the worker waits when the thread
//! is that far behind, so memory stays bounded). Small batches are gathered first and sent as
//! one, concatenated on the calling thread ([`SMALL_BATCH_ROWS`], [`COALESCE_ROWS`]): the
//! Parquet writer's cost per call is per column, each hand-off wakes the thread, and memory
//! freed on another thread than the one that allocated it contends for glibc's arena lock; a
//! stream of one-row batches (a decoder's decisions) paid all three per row. A write error is kept and returned by the
//! next call, and the file is closed only when asked ([`BackgroundWriter::finish`]); dropped
//! without that, the writer is abandoned and its file left incomplete for the caller to remove.
//! The file's size so far is reported after each batch ([`BackgroundWriter::size`]), for
//! writers that roll to a new file at a size.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::{bounded, Sender};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{KeyValue, RowGroupMetaData};

/// Sends queued for the thread at most.
const QUEUE_BATCHES: usize = 2;

/// Batches of fewer rows than this wait for others and are written together: the Parquet
/// writer's cost per call is per column (levels, statistics, allocations), which for one-row
/// batches of a few hundred columns (band powers per window) was ~100 µs a row.
pub(super) const SMALL_BATCH_ROWS: usize = 512;
/// Rows of small batches gathered before they are sent (and at the close; nothing of an open
/// Parquet file is readable before its footer anyway).
pub(super) const COALESCE_ROWS: usize = 4096;

enum Job {
    Write(RecordBatch),
    Metadata(KeyValue),
    /// End the open row group, write everything to the file, and answer with the file's bytes
    /// and the row groups flushed since the previous checkpoint.
    Checkpoint(Sender<Flushed>),
    /// Close the file (footer) and hand it back.
    Finish,
}

/// What [`BackgroundWriter::checkpoint`] answers: the file's bytes, and the row groups in them
/// that no earlier checkpoint reported.
pub(super) type Flushed = std::result::Result<(u64, Vec<RowGroupMetaData>), String>;

/// An [`ArrowWriter`] fed from the calling thread and run on its own.
pub(super) struct BackgroundWriter {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<Option<std::result::Result<File, String>>>>,
    /// The first write error, for the caller's next call.
    failed: Arc<Mutex<Option<String>>>,
    /// Bytes written plus bytes buffered for the open row group, after the last batch written.
    size: Arc<AtomicU64>,
    /// Arrow data bytes handed in and not written yet (gathered or queued).
    unwritten: Arc<AtomicU64>,
    /// Small batches not sent yet, and their rows.
    gathered: Vec<RecordBatch>,
    gathered_rows: usize,
}

impl BackgroundWriter {
    /// Starts the thread that owns `writer` (named after `what`, e.g. the file).
    pub(super) fn start(writer: ArrowWriter<File>, what: &str) -> std::io::Result<BackgroundWriter> {
        let (jobs, queue) = bounded::<Job>(QUEUE_BATCHES);
        let failed = Arc::new(Mutex::new(None));
        let size = Arc::new(AtomicU64::new(0));
        let unwritten = Arc::new(AtomicU64::new(0));
        let thread = {
            let (failed, size, unwritten) = (failed.clone(), size.clone(), unwritten.clone());
            std::thread::Builder::new().name(format!("parquet {what}")).spawn(move || {
                let mut writer = writer;
                let mut reported = 0;
                for job in queue {
                    if failed.lock().unwrap().is_some() {
                        continue; // drain: the caller learns of the failure at its next call
                    }
                    match job {
                        Job::Write(batch) => {
                            if let Err(e) = writer.write(&batch) {
                                *failed.lock().unwrap() = Some(e.to_string());
                            }
                            let bytes = writer.bytes_written() + writer.in_progress_size();
                            size.store(bytes as u64, Ordering::Relaxed);
                            unwritten.fetch_sub(data_bytes(&batch), Ordering::Relaxed);
                        }
                        Job::Metadata(kv) => writer.append_key_value_metadata(kv),
                        Job::Checkpoint(answer) => {
                            let flushed = writer.flush().map_err(|e| e.to_string()).and_then(|()| {
                                writer.sync().map_err(|e| e.to_string())?;
                                let groups = writer.flushed_row_groups()[reported..].to_vec();
                                reported += groups.len();
                                Ok((writer.bytes_written() as u64, groups))
                            });
                            if let Err(e) = &flushed {
                                *failed.lock().unwrap() = Some(e.clone());
                            }
                            let _ = answer.send(flushed);
                        }
                        Job::Finish => return Some(writer.into_inner().map_err(|e| e.to_string())),
                    }
                }
                None // abandoned: dropped without a footer
            })?
        };
        Ok(BackgroundWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            failed,
            size,
            unwritten,
            gathered: Vec::new(),
            gathered_rows: 0,
        })
    }

    /// The file's bytes after the last batch the thread has written: written, plus buffered for
    /// the open row group (encoded size, an estimate until the group is flushed). Batches not
    /// written yet are not counted: up to [`QUEUE_BATCHES`] sends and [`COALESCE_ROWS`] small rows
    /// behind.
    pub(super) fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Arrow data bytes of the batches handed in but not written yet (gathered or queued): with
    /// [`BackgroundWriter::size`], an upper estimate of the file's size once they are.
    pub(super) fn unwritten_bytes(&self) -> u64 {
        self.unwritten.load(Ordering::Relaxed)
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap().clone()
    }

    fn send(&self, job: Job) -> std::result::Result<(), String> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let sent = self.jobs.as_ref().map(|j| j.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.failure().unwrap_or_else(|| "the writer thread ended".into())),
        }
    }

    /// Queues `batch` (a small one is sent with others, see [`COALESCE_ROWS`]); an error is an
    /// earlier batch's (or this one's, when the thread is gone).
    pub(super) fn write(&mut self, batch: RecordBatch) -> std::result::Result<(), String> {
        self.unwritten.fetch_add(data_bytes(&batch), Ordering::Relaxed);
        if batch.num_rows() >= SMALL_BATCH_ROWS {
            // Large enough alone: sent as it is, after what was gathered before it.
            self.send_gathered()?;
            return self.send(Job::Write(batch));
        }
        self.gathered_rows += batch.num_rows();
        self.gathered.push(batch);
        if self.gathered_rows >= COALESCE_ROWS {
            self.send_gathered()?;
        }
        Ok(())
    }

    /// Sends the gathered batches as one.
    fn send_gathered(&mut self) -> std::result::Result<(), String> {
        let batch = match self.gathered.len() {
            0 => return Ok(()),
            1 => self.gathered.pop().expect("one batch"),
            _ => arrow::compute::concat_batches(&self.gathered[0].schema(), &self.gathered)
                .map_err(|e| format!("gathering small batches: {e}"))?,
        };
        self.gathered.clear();
        self.gathered_rows = 0;
        self.send(Job::Write(batch))
    }

    /// Adds key-value metadata to the file's footer.
    pub(super) fn append_key_value_metadata(&self, kv: KeyValue) -> std::result::Result<(), String> {
        self.send(Job::Metadata(kv))
    }

    /// Writes what is gathered and queued to the file (not synced) and ends its row group: see
    /// [`Flushed`]. The file stays open for more rows.
    pub(super) fn checkpoint(&mut self) -> Flushed {
        self.send_gathered()?;
        let (answer, flushed) = bounded(1);
        self.send(Job::Checkpoint(answer))?;
        flushed
            .recv()
            .unwrap_or_else(|_| Err(self.failure().unwrap_or_else(|| "the writer thread ended".into())))
    }

    /// Writes what is gathered and queued and the footer, and returns the file (not synced).
    pub(super) fn finish(mut self) -> std::result::Result<File, String> {
        self.send_gathered()?;
        self.send(Job::Finish)?;
        self.jobs = None;
        let outcome = self.thread.take().map(|t| t.join());
        match outcome {
            Some(Ok(Some(result))) => result,
            Some(Ok(None)) | None => Err(self.failure().unwrap_or_else(|| "the writer thread ended".into())),
            Some(Err(_)) => Err("the writer thread panicked".into()),
        }
    }
}

impl Drop for BackgroundWriter {
    /// Abandons the file: batches still queued are skipped, not encoded.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.failed.lock().unwrap().get_or_insert_with(|| "abandoned".into());
            self.jobs = None;
            let _ = t.join();
        }
    }
}

/// Bytes of Arrow data `batch` holds (its slice of its buffers).
fn data_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::properties::WriterProperties;

    fn batch(from: i64, rows: i64) -> RecordBatch {
        let values: ArrayRef = Arc::new(Int64Array::from_iter_values(from..from + rows));
        RecordBatch::try_from_iter([("x", values)]).unwrap()
    }

    /// Batches come out in the order given, with the footer's metadata.
    #[test]
    fn batches_are_written_in_order_with_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(700)).build();
        let writer = ArrowWriter::try_new(File::create(&path).unwrap(), batch(0, 1).schema(), Some(props)).unwrap();
        let mut w = BackgroundWriter::start(writer, "x.parquet").unwrap();
        // One-row batches (gathered and concatenated), 500-row ones, and one batch large
        // enough to be sent alone between small ones.
        let mut next = 0;
        for rows in [1, 1, 1].into_iter().chain([500; 10]).chain([20_000, 1, 7]).chain([500; 9]) {
            w.write(batch(next, rows)).unwrap();
            next += rows;
        }
        w.append_key_value_metadata(KeyValue::new("k".to_string(), "v".to_string()))
            .unwrap();
        drop(w.finish().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let kv = reader.metadata().file_metadata().key_value_metadata().unwrap().clone();
        assert!(kv.iter().any(|e| e.key == "k" && e.value.as_deref() == Some("v")));
        let got: Vec<i64> = reader
            .build()
            .unwrap()
            .flat_map(|b| {
                let b = b.unwrap();
                let x = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().clone();
                x.values().to_vec()
            })
            .collect();
        assert_eq!(got, (0..next).collect::<Vec<i64>>());
    }

    /// The reported size grows with the batches written and reaches the file's size once
    /// row groups are flushed.
    #[test]
    fn the_size_follows_the_batches_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        // Batches too large to wait for others, so each is sent at once.
        let rows = (2 * SMALL_BATCH_ROWS) as i64;
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows as usize))
            .build();
        let writer = ArrowWriter::try_new(File::create(&path).unwrap(), batch(0, 1).schema(), Some(props)).unwrap();
        let mut w = BackgroundWriter::start(writer, "x.parquet").unwrap();
        assert_eq!(w.size(), 0);
        let mut sizes = Vec::new();
        for k in 0..10 {
            w.write(batch(k * rows, rows)).unwrap();
            // Wait until the thread has taken this batch (the size moves past the last one).
            let t0 = std::time::Instant::now();
            while sizes.last().is_some_and(|&s| w.size() <= s) || w.size() == 0 {
                assert!(t0.elapsed().as_secs() < 10, "the size never moved");
                std::thread::yield_now();
            }
            sizes.push(w.size());
        }
        assert!(sizes.windows(2).all(|p| p[0] < p[1]), "{sizes:?}");
        let last = *sizes.last().unwrap();
        let file = w.finish().unwrap();
        let on_disk = file.metadata().unwrap().len();
        // Ten flushed row groups: everything but the footer (about 2 KiB of row-group metadata).
        assert!(last <= on_disk && on_disk - last < 8192, "{last} reported, {on_disk} on disk");
    }

    /// A write into a full disk (/dev/full) comes back from a later call or from `finish`.
    #[test]
    fn a_failed_write_comes_back_to_the_caller() {
        let props = WriterProperties::builder().set_max_row_group_row_count(Some(100)).build();
        let file = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        // The header is buffered, so the writer starts; the first flush fails.
        let writer = ArrowWriter::try_new(file, batch(0, 1).schema(), Some(props)).unwrap();
        let mut w = BackgroundWriter::start(writer, "full").unwrap();
        let mut error = None;
        for k in 0..1000 {
            if let Err(e) = w.write(batch(k * 100, 100)) {
                error = Some(e);
                break;
            }
        }
        let error = error.or_else(|| w.finish().err()).expect("a write into /dev/full fails");
        assert!(error.contains("No space left"), "{error}");
    }
}
