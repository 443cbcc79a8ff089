"""A multipart upload read as it arrives: the `file` part's bytes are handed on chunk by chunk, never gathered
(python-multipart's streaming parser over Starlette's request stream)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from aifactory.api.errors import BadRequest

FIELD = "file"
# The OpenAPI description of the body: Swagger UI shows a file picker.
OPENAPI_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD], "properties": {FIELD: {"type": "string", "format": "binary"}}}}}}}


class FilePart:
    """The `file` part of a multipart/form-data request: `await start()` reads up to its headers and returns its
    file name; `chunks()` then yields its content as it arrives."""

    def __init__(self, request: Request):
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise BadRequest("Send the file as multipart/form-data in a part named 'file' (curl -F file=@...)")
        self._stream = request.stream().__aiter__()
        self._pending: list[bytes] = []
        self._header = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self.filename: str | None = None
        self.done = False
        self._ended = False
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        })

    # -- the parser's callbacks (synchronous) --
    def _part_begin(self) -> None:
        self._headers, self._header, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._in_file = options.get(b"name") == FIELD.encode() and self.filename is None and not self.done
        if self._in_file:
            self.filename = options.get(b"filename", b"").decode(errors="replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file, self.done = False, True

    async def _feed(self) -> bool:
        """One more chunk of the body into the parser; False at its end."""
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._ended = True
            return False
        if chunk:
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise BadRequest(f"The multipart body cannot be read: {exc}") from None
        return True

    async def start(self) -> str:
        while self.filename is None:
            if not await self._feed():
                raise BadRequest(f"The request has no part named '{FIELD}' (send the file with -F {FIELD}=@...)")
        return self.filename

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._pending:
                data, self._pending = b"".join(self._pending), []
                yield data
            if self.done:
                return
            if not await self._feed():
                raise BadRequest("The upload ended before its file did")
