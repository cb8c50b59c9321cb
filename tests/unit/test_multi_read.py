# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The multiRead request and its fallback, without a server: the bytes ZooKeeper reads and writes, and what a refusal changes.

The real server answers it in tests/integration/test_views.py.
"""

from __future__ import annotations

import struct

import pytest
from kazoo.exceptions import NoNodeError, UnimplementedError
from kazoo.handlers.threading import AsyncResult, SequentialThreadingHandler
from kazoo.protocol.serialization import GetChildren, GetData, MultiHeader, int_struct, stat_struct, write_buffer, write_string
from kazoo.protocol.states import ZnodeStat

from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import MultiRead, ReadBatch, multi_read_supported

STAT = ZnodeStat(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)


def _reply(*answers):
    """A multiRead reply as the server writes it (MultiResponse): a header before each answer, a closing one."""
    body = bytearray()
    for kind, value in answers:
        if kind == "children":
            body += MultiHeader(GetChildren.type, False, 0).serialize() + int_struct.pack(len(value))
            for child in value:
                body += write_string(child)
        elif kind == "data":
            body += MultiHeader(GetData.type, False, 0).serialize() + write_buffer(value) + stat_struct.pack(*STAT)
        else:
            body += MultiHeader(-1, False, value).serialize() + int_struct.pack(value)
    return bytes(body + MultiHeader(-1, True, -1).serialize())


def test_a_multi_read_is_serialised_as_a_header_before_each_read_and_a_closing_header():
    request = MultiRead([GetChildren("/dc/current/A", None), GetData("/dc/rollout", None)])
    expected = (MultiHeader(8, False, -1).serialize() + GetChildren("/dc/current/A", None).serialize()
                + MultiHeader(4, False, -1).serialize() + GetData("/dc/rollout", None).serialize() + struct.pack("!i?i", -1, True, -1))
    assert request.type == 22
    assert bytes(request.serialize()) == bytes(expected)


def test_a_multi_read_reply_gives_each_answer_in_request_order_and_a_missing_node_as_its_error():
    data = b"prefix" + _reply(("children", ["h1@2.0.0", "h2@1.0.0"]), ("error", NoNodeError.code), ("data", b'{"state":"running"}'),
                              ("children", []))
    answers = MultiRead.deserialize(data, len(b"prefix"))
    assert answers[0] == ["h1@2.0.0", "h2@1.0.0"]
    assert isinstance(answers[1], NoNodeError)
    assert answers[2] == (b'{"state":"running"}', STAT)
    assert answers[3] == []


class _Client(object):
    """What ReadBatch uses of a kazoo client; ``_call`` answers a multiRead as a server before 3.6 does."""

    chroot = ""

    def __init__(self, multi_read=True):
        self.handler = SequentialThreadingHandler()
        self.multi_read = multi_read
        self.sent = []

    def _call(self, request, async_object):
        self.sent.append(request)
        if self.multi_read:
            async_object.set([["h1@2.0.0"] if isinstance(operation, GetChildren) else (b"x", STAT) for operation in request])
        else:
            async_object.set_exception(UnimplementedError())

    def _answer(self, value):
        result = AsyncResult(self.handler)
        result.set(value)
        return result

    def get_children_async(self, path):
        self.sent.append(("children", path))
        return self._answer(["one by one"])

    def get_async(self, path):
        self.sent.append(("data", path))
        return self._answer((b"one by one", STAT))


def test_reads_of_a_batch_go_out_as_one_request_when_the_first_answer_is_asked_for():
    client = _Client()
    batch = ReadBatch(client)
    listing = batch.get_children("/dc/current/A")
    assert client.sent == [] and not batch.sent
    assert listing.get() == ["h1@2.0.0"]
    assert len(client.sent) == 1 and isinstance(client.sent[0], MultiRead) and batch.sent
    with pytest.raises(RuntimeError):
        batch.get("/dc/rollout")


def test_a_server_that_refuses_multi_read_is_read_one_request_per_node_from_then_on():
    client = _Client(multi_read=False)
    batch = ReadBatch(client)
    listing, payload = batch.get_children("/dc/current/A"), batch.get("/dc/rollout")
    assert listing.get() == ["one by one"] and payload.get() == (b"one by one", STAT)
    assert not multi_read_supported(client)
    assert isinstance(client.sent[0], MultiRead) and client.sent[1:] == [("children", "/dc/current/A"), ("data", "/dc/rollout")]
    later = ReadBatch(client).get_children("/dc/current/B")
    assert later.get() == ["one by one"] and client.sent[-1] == ("children", "/dc/current/B") and len(client.sent) == 4
