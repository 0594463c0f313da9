"""The worker's two pipes: fd 3 (frames in) and fd 4 (frames out).

Owns: blocking whole-frame writes, buffered non-blocking-safe reads through the
`FrameDecoder` (whose body limit follows CONFIG `max_frame_bytes`), and the "dispatcher gone" state (EOF or EPIPE). No worker logic.
"""

import errno
import os

from . import protocol as P


class Transport:
    def __init__(self, rfd=3, wfd=4, max_body=P.DEFAULT_MAX_BODY):
        self.rfd = rfd
        self.wfd = wfd
        self.decoder = P.FrameDecoder(max_body)
        self.eof = False
        self.broken = False  # the reply pipe is gone: drop all further writes

    def fileno(self):
        return self.rfd

    def send(self, ftype, request_id=0, meta=None, body=b""):
        """Write one frame completely (blocking). Returns False once the pipe is broken."""
        if self.broken:
            return False
        return self.write(P.encode_frame(ftype, request_id, meta, body))

    def write(self, frame_bytes):
        """Write encoded frames completely (blocking). False once the pipe is broken."""
        if self.broken:
            return False
        try:
            # Almost always one write takes it all (a pipe holds 64 KiB or more).
            n = os.write(self.wfd, frame_bytes)
            if n == len(frame_bytes):
                return True
        except (InterruptedError, BlockingIOError):
            n = 0
        except OSError as err:
            if err.errno in (errno.EPIPE, errno.EBADF):
                self.broken = True
                return False
            raise
        data = memoryview(frame_bytes)[n:]
        while data:
            try:
                n = os.write(self.wfd, data)
            except InterruptedError:
                continue
            except BlockingIOError:
                import select
                select.select([], [self.wfd], [])
                continue
            except OSError as err:
                if err.errno in (errno.EPIPE, errno.EBADF):
                    self.broken = True
                    return False
                raise
            data = data[n:]
        return True

    def read_available(self, size=1 << 16):
        """One read (call when readable); yields the decoded frames lazily (consume them
        all); sets `eof` on EOF. Raises protocol.ProtocolError on a malformed stream."""
        # Never more than the current frame needs beyond `size` (bounded at 16 MiB/read).
        size = max(size, min(self.decoder.missing(), 16 << 20))
        try:
            chunk = os.read(self.rfd, size)
        except (InterruptedError, BlockingIOError):
            chunk = None
        if chunk == b"":
            self.eof = True
        elif chunk:
            self.decoder.push(chunk)
        return self.decoder.frames()

    def read_frame(self):
        """Block until one frame arrives (start-up CONFIG); None on EOF. Bytes after it
        stay in the decoder: `buffered()` yields them (after the caller has applied the
        CONFIG's frame limit)."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            try:
                chunk = os.read(self.rfd, 1 << 16)
            except (InterruptedError, BlockingIOError):
                import select
                select.select([self.rfd], [], [])
                continue
            if not chunk:
                self.eof = True
                return None
            self.decoder.push(chunk)

    def buffered(self):
        """Frames already read but not yet decoded (yielded lazily)."""
        return self.decoder.frames()
