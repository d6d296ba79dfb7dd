//! The sink writers of rolling output: frames (one [`RollingWriter`] per worker) and result
//! tables (one per table, under `<path>/<table>/`, on worker 0).

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::Schema as ArrowSchema;
use neurostream_engine::checkpoint::{decode_state, encode_state, SinkCommit};
use neurostream_engine::layout::EncodeOptions;
use neurostream_engine::{Batch, Result, SinkWriter, WorkerPos};

use super::rolling::{RollPolicy, RollingState, RollingWriter};
use super::{encode_frame, out_err};

/// One worker's rolling output of a frame stream.
pub(super) struct RollingFrames {
    arrow: Arc<ArrowSchema>,
    opts: EncodeOptions,
    /// Whether the first frame has decided the layout's `time` column.
    decided: bool,
    started: bool,
    out: RollingWriter,
}

impl RollingFrames {
    pub(super) fn new(
        root: PathBuf,
        worker: WorkerPos,
        arrow: Arc<ArrowSchema>,
        opts: EncodeOptions,
        policy: Arc<RollPolicy>,
    ) -> RollingFrames {
        RollingFrames {
            arrow,
            opts,
            decided: false,
            started: false,
            out: RollingWriter::new(root, worker.index, worker.peers, policy, "the written rows".into()),
        }
    }

    fn start(&mut self) -> Result<()> {
        if !self.started {
            self.started = true;
            self.out.start(false, None)?;
        }
        Ok(())
    }
}

impl SinkWriter for RollingFrames {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        self.start()?;
        let decide = !self.decided;
        self.decided = true;
        let record = encode_frame(batch, &mut self.arrow, &mut self.opts, decide, self.out.root())?;
        self.out.write(&record, batch.stream())
    }

    fn end_stream(&mut self, stream: &str) -> Result<()> {
        if self.started {
            self.out.end_stream(stream)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        self.start()?;
        Ok(vec![self.out.finish(failure)?])
    }

    fn start_checkpointed(&mut self, resume: Option<&[u8]>) -> Result<()> {
        let state = resume
            .map(|b| decode_state::<RollingState>(b, &self.out.root().display().to_string()))
            .transpose()?;
        self.started = true;
        self.out.start(true, state)
    }

    fn precommit(&mut self) -> Result<SinkCommit> {
        let files = self.out.precommit()?;
        Ok(SinkCommit {
            state: encode_state(self.out.checkpoint_state())?,
            files,
        })
    }
}

/// Rolling output of a stream of result tables: `<dir>/<table>/…` per table.
pub(super) struct RollingTables {
    dir: PathBuf,
    wanted: Vec<String>,
    policy: Arc<RollPolicy>,
    writers: Vec<(String, RollingWriter)>,
    checkpointed: bool,
}

impl RollingTables {
    pub(super) fn new(dir: PathBuf, wanted: Vec<String>, policy: Arc<RollPolicy>) -> RollingTables {
        RollingTables {
            dir,
            wanted,
            policy,
            writers: Vec::new(),
            checkpointed: false,
        }
    }

    fn writer(&mut self, table: &str, resume: Option<RollingState>) -> Result<usize> {
        if let Some(i) = self.writers.iter().position(|(t, _)| t == table) {
            return Ok(i);
        }
        let mut w = RollingWriter::new(self.dir.join(table), 0, 1, self.policy.clone(), format!("table `{table}`"));
        w.start(self.checkpointed, resume)?;
        self.writers.push((table.to_string(), w));
        Ok(self.writers.len() - 1)
    }
}

impl SinkWriter for RollingTables {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let Batch::Table(t) = batch else {
            return Err(out_err(&self.dir, "frames sent to a sink configured for result tables"));
        };
        if !self.wanted.iter().any(|w| **w == *t.table) {
            return Ok(());
        }
        let i = self.writer(&t.table, None)?;
        self.writers[i].1.write(&t.data, &t.stream)
    }

    fn finish(self: Box<Self>, failure: Option<&str>) -> Result<Vec<String>> {
        // Every table is finished even when one fails; the first error is the result.
        let mut lines = Vec::new();
        let mut first_err = None;
        for (_, w) in self.writers {
            match w.finish(failure) {
                Ok(l) => lines.push(l),
                Err(e) => {
                    lines.push(e.to_string());
                    first_err.get_or_insert(e);
                }
            }
        }
        if lines.is_empty() {
            lines.push(format!("{}: no table rows received", self.dir.display()));
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(lines),
        }
    }

    fn start_checkpointed(&mut self, resume: Option<&[u8]>) -> Result<()> {
        self.checkpointed = true;
        let states: Vec<(String, RollingState)> = resume
            .map(|b| decode_state(b, &self.dir.display().to_string()))
            .transpose()?
            .unwrap_or_default();
        for (table, state) in states {
            self.writer(&table, Some(state))?;
        }
        Ok(())
    }

    fn precommit(&mut self) -> Result<SinkCommit> {
        let mut commit = SinkCommit::default();
        let mut states = Vec::new();
        for (table, w) in &mut self.writers {
            commit.files.extend(w.precommit()?);
            states.push((table.clone(), w.checkpoint_state().clone()));
        }
        commit.state = encode_state(&states)?;
        Ok(commit)
    }
}
