//! Reading frames from a stream into one reused, 16-byte aligned buffer.
//!
//! Bytes are read into the spare capacity of a `BytesMut` of
//! `recv_buffer_bytes`; each complete frame is split off and frozen, so its
//! payload is a `Bytes` slice of the buffer that decoded messages borrow
//! from (entry payloads go from here to the WAL batch uncopied). Once every
//! frame of a buffer has been dropped, `reserve` reclaims the same
//! allocation: no allocation per message in steady state.

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

use super::RecvError;
use crate::wire::frame::{decode_frame, FRAME_ALIGN, FRAME_HEADER_BYTES};

/// Reads frames; bounded by `recv_buffer_bytes` (how much is read at once)
/// and `frame_bytes_max` (the largest payload accepted).
#[derive(Debug)]
pub struct FrameReader {
    // Invariant: holds the unconsumed bytes received, starting at a frame
    // boundary, at a 16-byte aligned address (so payloads are aligned).
    buf: BytesMut,
    recv_buffer_bytes: usize,
    frame_bytes_max: usize,
    /// Bytes of the frame being waited for (0: unknown yet).
    want: usize,
    /// Times a buffer start was found misaligned (payloads then get copied
    /// by the decoder; the allocator is expected to make this 0).
    pub misaligned: u64,
}

impl FrameReader {
    pub fn new(recv_buffer_bytes: usize, frame_bytes_max: usize) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(recv_buffer_bytes),
            recv_buffer_bytes,
            frame_bytes_max,
            want: 0,
            misaligned: 0,
        }
    }

    /// The next complete frame already received, if any: (kind, payload).
    pub fn next_buffered(&mut self) -> Result<Option<(u8, Bytes)>, RecvError> {
        let (kind, len, total) = match decode_frame(&self.buf, self.frame_bytes_max)? {
            None => {
                self.want = if self.buf.len() >= FRAME_HEADER_BYTES {
                    let len = u32::from_le_bytes(self.buf[8..12].try_into().expect("4 bytes"));
                    crate::wire::frame::frame_bytes(len as usize)
                } else {
                    FRAME_HEADER_BYTES
                };
                return Ok(None);
            }
            Some((f, total)) => (f.kind, f.payload.len(), total),
        };
        self.want = 0;
        let frame = self.buf.split_to(total).freeze();
        Ok(Some((
            kind,
            frame.slice(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len),
        )))
    }

    /// Reads once from `r` (waiting for at least one byte). `Ok(false)`: the
    /// stream ended cleanly between frames.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<bool, RecvError> {
        let need = self.want.max(FRAME_HEADER_BYTES);
        let len = self.buf.len();
        let missing = need.saturating_sub(len);
        if self.buf.capacity() - len < missing.max(4096.min(self.recv_buffer_bytes)) {
            // Reclaims the current allocation when every frame split off it
            // has been dropped (moving the partial frame to its front).
            self.buf
                .reserve(missing.max(self.recv_buffer_bytes.saturating_sub(len)));
        }
        if !(self.buf.as_ptr() as usize).is_multiple_of(FRAME_ALIGN) {
            self.misaligned += 1;
        }
        let spare = self.buf.spare_capacity_mut();
        // SAFETY: the reader only writes into the slice (a recv(2) into it);
        // only the `n` bytes it reports written are exposed by `set_len`.
        let spare = unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        let n = r.read(spare).await.map_err(RecvError::Io)?;
        if n == 0 {
            return if len == 0 {
                Ok(false)
            } else {
                Err(RecvError::Truncated { bytes: len })
            };
        }
        // SAFETY: `n` bytes past `len` were just written by the read.
        unsafe { self.buf.set_len(len + n) };
        Ok(true)
    }

    /// The next frame: `Ok(None)` when the stream ended cleanly.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<(u8, Bytes)>, RecvError> {
        loop {
            if let Some(f) = self.next_buffered()? {
                return Ok(Some(f));
            }
            if !self.fill(r).await? {
                return Ok(None);
            }
        }
    }
}
