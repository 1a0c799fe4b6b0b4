//! A model of how the Go side of NRI reads mux frames, used by the runtime-side test peer to
//! reject frames a real containerd could not read.
//!
//! Go's mux hands out one whole frame per `Read` and fails with `ENOMEM` when the caller's buffer
//! is smaller than the frame. Go ttrpc reads each logical connection through a 4096-byte
//! `bufio.Reader` with two `io.ReadFull` calls per message (10-byte header, then payload). A
//! `bufio.Reader` with an empty buffer reads straight into the caller's slice when that slice is
//! at least 4096 bytes long, and otherwise into its own 4096-byte buffer; with data buffered it
//! only copies. This model replays exactly that, frame by frame, and reports the frame on which
//! the Go reader would fail.

/// Size of the `bufio.Reader` Go ttrpc wraps around each connection.
pub(crate) const GO_BUFIO_SIZE: usize = 4096;
const TTRPC_HEADER_LEN: usize = 10;

/// Per-connection state of the Go reader model.
#[derive(Debug, Default)]
pub(crate) struct GoReadModel {
    /// Bytes of the current ttrpc header already consumed (until 10 are there).
    header: Vec<u8>,
    /// Payload bytes still to read for the current message, once the header is complete.
    payload_left: Option<usize>,
}

impl GoReadModel {
    /// Bytes the pending `io.ReadFull` still wants.
    fn wanted(&self) -> usize {
        match self.payload_left {
            Some(n) => n,
            None => TTRPC_HEADER_LEN - self.header.len(),
        }
    }

    /// Feeds one frame payload that the Go reader receives while its buffer is empty.
    ///
    /// Returns an error describing the failure if Go's `Read` would have failed on this frame.
    pub(crate) fn on_frame(&mut self, frame: &[u8]) -> Result<(), String> {
        let wanted = self.wanted();
        let capacity = if wanted >= GO_BUFIO_SIZE {
            wanted
        } else {
            GO_BUFIO_SIZE
        };
        if frame.len() > capacity {
            return Err(format!(
                "frame of {} bytes arrived while the Go reader offered a {capacity}-byte buffer \
                 (ENOMEM in the Go mux)",
                frame.len()
            ));
        }
        // Direct reads and copies out of the bufio buffer both hand the bytes over in order, so
        // consuming the frame byte-wise through the message state machine is exact.
        let mut rest = frame;
        while !rest.is_empty() {
            let take = self.wanted().min(rest.len());
            self.consume(&rest[..take]);
            rest = &rest[take..];
        }
        Ok(())
    }

    fn consume(&mut self, bytes: &[u8]) {
        match self.payload_left {
            Some(n) => {
                let left = n - bytes.len();
                self.payload_left = (left > 0).then_some(left);
            }
            None => {
                self.header.extend_from_slice(bytes);
                if self.header.len() == TTRPC_HEADER_LEN {
                    let len = u32::from_be_bytes([
                        self.header[0],
                        self.header[1],
                        self.header[2],
                        self.header[3],
                    ]) as usize;
                    self.header.clear();
                    self.payload_left = (len > 0).then_some(len);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut m = Vec::with_capacity(10 + len);
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.extend_from_slice(&1u32.to_be_bytes());
        m.extend_from_slice(&[1, 0]);
        m.resize(10 + len, 0xAB);
        m
    }

    fn feed(model: &mut GoReadModel, bytes: &[u8], frame: usize) -> Result<(), String> {
        bytes.chunks(frame).try_for_each(|c| model.on_frame(c))
    }

    #[test]
    fn a_large_frame_starting_a_message_fails() {
        let mut model = GoReadModel::default();
        assert!(model.on_frame(&message(5000)).is_err());
    }

    #[test]
    fn frames_of_at_most_4096_bytes_always_pass() {
        for len in [0, 1, 100, 4085, 4086, 4087, 5000, 8192, 70_000] {
            for frame in [1, 7, 10, 1000, 4096] {
                let mut model = GoReadModel::default();
                let mut two = message(len);
                two.extend_from_slice(&message(len / 2));
                feed(&mut model, &two, frame).unwrap_or_else(|e| panic!("{len}/{frame}: {e}"));
                assert_eq!(model.wanted(), 10, "{len}/{frame} ends between messages");
            }
        }
    }

    #[test]
    fn go_writer_pattern_passes() {
        // Go ttrpc writes header + up to 4086 payload bytes, then the rest in one write; the Go
        // reader then reads the rest directly into the payload slice.
        let msg = message(100_000);
        let mut model = GoReadModel::default();
        model.on_frame(&msg[..4096]).unwrap();
        model.on_frame(&msg[4096..]).unwrap();
        assert_eq!(model.wanted(), 10);
    }

    #[test]
    fn a_tail_frame_bigger_than_the_rest_of_a_short_payload_fails() {
        // 5000-byte payload: 4086 bytes come with the header, 914 remain (< 4096 so bufio reads
        // into its own buffer); a frame carrying those 914 bytes plus a whole 5000-byte next
        // message is bigger than 4096 and fails.
        let mut bytes = message(5000);
        bytes.extend_from_slice(&message(5000));
        let mut model = GoReadModel::default();
        model.on_frame(&bytes[..4096]).unwrap();
        assert!(model.on_frame(&bytes[4096..]).is_err());
    }
}
