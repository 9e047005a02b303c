"""Reads TensorBoard event files back, independently of the writer."""

import os
import struct

from tensorboardX.proto import event_pb2


def read_events(logdir):
    """Every event under a TensorBoard log directory, read back from the TFRecord framing
    (u64 length, u32 crc, payload, u32 crc) with tensorboardX's Event proto."""
    events = []
    for root, _, files in os.walk(logdir):
        for name in sorted(files):
            data = open(os.path.join(root, name), "rb").read()
            pos = 0
            while pos < len(data):
                (length,) = struct.unpack("<Q", data[pos:pos + 8])
                events.append((os.path.relpath(root, logdir),
                               event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])))
                pos += 12 + length + 4
    return events
