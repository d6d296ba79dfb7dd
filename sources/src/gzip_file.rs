//! Recording files that readers seek in and that may be gzip-compressed (MNE's `raw.fif.gz`,
//! pyxdf's `.xdfz`, `.csv.gz` as pandas reads it): a gzip stream cannot seek, so a compressed
//! file is inflated once, when opened, into an unnamed temporary file (in `TMPDIR`, gone when its
//! last handle closes) and read from there.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file opened by [`open_seekable`].
struct Seekable {
    /// The file itself, or its inflated copy.
    file: File,
    /// Bytes readable from `file`.
    size: u64,
    /// Whether `file` is an inflated copy (reopening the path would give the compressed bytes).
    inflated: bool,
}

/// Opens `path` for seeking: the file, or where it starts with the gzip magic, its contents
/// inflated (every member of a multi-member stream). Errors name the file.
fn open_seekable(path: &Path) -> Result<Seekable, String> {
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = File::open(path).map_err(at)?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0)).map_err(at)?;
    if !gzip {
        let size = file.metadata().map_err(at)?.len();
        return Ok(Seekable {
            file,
            size,
            inflated: false,
        });
    }
    let inflated = tempfile::tempfile().map_err(|e| {
        format!(
            "{}: gzip-compressed; cannot make a temporary file to inflate it into: {e}",
            path.display()
        )
    })?;
    let mut out = BufWriter::with_capacity(1 << 20, &inflated);
    let mut gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let size = std::io::copy(&mut gz, &mut out)
        .and_then(|n| out.flush().map(|_| n))
        .map_err(|e| format!("{}: inflating the gzip-compressed file: {e}", path.display()))?;
    drop(out);
    let mut file = inflated;
    file.seek(SeekFrom::Start(0)).map_err(at)?;
    Ok(Seekable {
        file,
        size,
        inflated: true,
    })
}

/// A file that several readers read at once, each at its own position: the file at a path, or
/// the inflated copy of a gzip-compressed one, shared by every reader.
#[derive(Clone, Debug)]
pub struct SharedFile {
    path: PathBuf,
    /// Bytes readable (inflated).
    size: u64,
    inflated: Option<Arc<File>>,
}

/// A reader of a [`SharedFile`].
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

impl SharedFile {
    /// Opens `path`, inflating it when it is gzip-compressed ([`open_seekable`]).
    pub fn open(path: &Path) -> Result<SharedFile, String> {
        let opened = open_seekable(path)?;
        Ok(SharedFile {
            path: path.to_path_buf(),
            size: opened.size,
            inflated: opened.inflated.then(|| Arc::new(opened.file)),
        })
    }

    /// Bytes readable from a [`SharedFile::reader`] (the inflated size of a compressed file).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's path (the compressed one's, for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader from the start of the (inflated) contents, with a position of its own.
    pub fn reader(&self) -> std::io::Result<Box<dyn ReadSeek>> {
        Ok(match &self.inflated {
            None => Box::new(File::open(&self.path)?),
            Some(file) => Box::new(AtOffset {
                file: file.clone(),
                pos: 0,
                len: self.size,
            }),
        })
    }
}

/// Reads a shared file from its own position (positioned reads: no shared file offset).
struct AtOffset {
    file: Arc<File>,
    pos: u64,
    len: u64,
}

impl Read for AtOffset {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.pos)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(&*self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for AtOffset {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_open_as_they_are_and_gzip_ones_inflated() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.bin");
        let text: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(&plain, &text).unwrap();
        let gz = dir.path().join("a.bin.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&text[..1000]).unwrap();
        let mut bytes = enc.finish().unwrap();
        // A second member, as `cat a.gz b.gz` makes.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&text[1000..]).unwrap();
        bytes.extend(enc.finish().unwrap());
        std::fs::write(&gz, &bytes).unwrap();
        for (path, inflated) in [(&plain, false), (&gz, true)] {
            let mut s = open_seekable(path).unwrap();
            assert_eq!((s.size, s.inflated), (text.len() as u64, inflated));
            let mut back = Vec::new();
            s.file.seek(SeekFrom::Start(4)).unwrap();
            s.file.read_to_end(&mut back).unwrap();
            assert_eq!(back, text[4..]);
        }
        // Readers of a shared inflated file keep positions of their own.
        let shared = SharedFile::open(&gz).unwrap();
        let (mut a, mut b) = (shared.reader().unwrap(), shared.reader().unwrap());
        let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
        a.seek(SeekFrom::Start(400)).unwrap();
        b.read_exact(&mut y).unwrap();
        a.read_exact(&mut x).unwrap();
        assert_eq!((&x[..], &y[..]), (&text[400..408], &text[..8]));
        assert_eq!(a.seek(SeekFrom::End(-4)).unwrap(), text.len() as u64 - 4);
        std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
        let cut = open_seekable(&gz).err().unwrap();
        assert!(cut.contains("a.bin.gz: inflating the gzip-compressed file"), "{cut}");
    }
}
