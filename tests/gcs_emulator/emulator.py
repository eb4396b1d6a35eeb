"""gcp-storage-emulator, one store, two loopback listeners:
plain HTTP on --http-port (google-cloud-storage via STORAGE_EMULATOR_HOST) and TLS on --https-port
(TensorFlow's built-in gs://, whose endpoint https://www.googleapis.com is hard-coded)."""
import argparse, logging, os, ssl, threading
from functools import partial
from http import server as hs
from gcp_storage_emulator import server as gse
from gcp_storage_emulator.storage import Storage

_orig_init = gse.Request.__init__
def _init(self, request_handler, method):
    _orig_init(self, request_handler, method)
    if isinstance(request_handler.connection, ssl.SSLSocket):  # Location/mediaLink must be https too
        self._base_url = "https://" + self._base_url[len("http://"):]
        self._full_url = self._base_url + self._path
        self._parsed_url = gse.urlparse(self._full_url)
gse.Request.__init__ = _init

_orig_raw = gse._read_raw_data
def _read_raw_data(h):  # emulator bug: Content-Length was preferred over Transfer-Encoding: chunked
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":  # (TF's uploads send both)
        del h.headers["Content-Length"]
    return _orig_raw(h)
gse._read_raw_data = _read_raw_data

from gcp_storage_emulator.handlers import objects as _objects
_orig_media = _objects._media_upload
def _media_upload(request, response, storage):  # emulator bug: an empty body (TF's "dir/" marker) reads as None
    if request.data is None:
        request._data = b""
    return _orig_media(request, response, storage)
_objects._media_upload = _media_upload

from urllib.parse import quote as _quote
from gcp_storage_emulator.storage import Storage as _Storage
def _storage_layout(request, response, storage):
    # missing in the emulator; TF 2.21's gs:// asks for it before renaming a directory
    name = request.params["bucket_name"]
    if storage.get_bucket(name) is None:
        response.status = gse.HTTPStatus.NOT_FOUND
        return
    response.json({"kind": "storage#storageLayout", "bucket": name, "location": "US",
                   "locationType": "multi-region", "hierarchicalNamespace": {"enabled": False}})
gse.HANDLERS = ((r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/storageLayout$", {gse.GET: _storage_layout}),) + tuple(gse.HANDLERS)
# emulator bug: objects "a/" (TF's directory marker) and "a/b" collide as file vs directory on its
# file store; store each object under one flat, quoted name instead.
_Storage._object_path = lambda self, bucket, name: f"{bucket}/{_quote(name, safe='')}"

# emulator bug: an object's mediaLink keeps the base URL of the request that wrote it, so after
# TF wrote an object over TLS, google-cloud-storage (Beam) reading it from the HTTP port was sent
# to https://www.googleapis.com (the real one, or the proxy with a CA it doesn't trust). Answer
# every request with links on its own base URL instead (copies; the stored metadata is untouched).
def _relink(obj, base):
    if isinstance(obj, dict):
        return {k: (base + v[v.index("/download/storage/v1/"):]
                    if k == "mediaLink" and isinstance(v, str) and "/download/storage/v1/" in v
                    else _relink(v, base)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relink(v, base) for v in obj]
    return obj
_orig_json = gse.Response.json
def _json(self, obj):
    h = self._handler
    host = h.headers.get("Host") or "%s:%s" % h.server.server_address[:2]
    scheme = "https" if isinstance(h.connection, ssl.SSLSocket) else "http"
    return _orig_json(self, _relink(obj, f"{scheme}://{host}"))
gse.Response.json = _json

# emulator bug: generation preconditions (ifGenerationMatch & co) were ignored, so
# upload_from_string(..., if_generation_match=0) overwrote an existing object and
# delete(if_generation_match=<stale>) deleted it. Check them, as GCS does, where an object is
# written (uploads; a resumable upload both when it starts and at its final request, whose URL
# keeps the query; copy/rewrite/compose destinations) or deleted, and answer 412 like GCS.
# Not checked: ifSourceGeneration* of copy/rewrite, reads, batch requests.
from urllib.parse import parse_qs as _parse_qs, urlparse as _urlparse
_current = threading.local()
class _PreconditionFailed(Exception):
    pass
def _check_preconditions(storage, bucket, name, deleting=False):
    q = getattr(_current, "query", {})
    conds = [(k, q[k][0]) for k in ("ifGenerationMatch", "ifGenerationNotMatch",
                                    "ifMetagenerationMatch", "ifMetagenerationNotMatch") if k in q]
    if not conds:
        return
    obj = storage.objects.get(bucket, {}).get(name)
    if obj is None and deleting:
        return  # GCS answers 404 for a missing object
    gen = int(obj["generation"]) if obj else 0
    meta = int(obj.get("metageneration") or 0) if obj else 0
    for k, v in conds:
        cur, want = (gen if "Metageneration" not in k else meta), int(v)
        if (cur == want) != ("NotMatch" not in k) or (obj is None and "Metageneration" in k):
            raise _PreconditionFailed(f"{k}={v} failed for {bucket}/{name} (generation {gen})")
_orig_create_file, _orig_delete_file = _Storage.create_file, _Storage.delete_file
def _create_file(self, bucket_name, file_name, *args, **kwargs):
    _check_preconditions(self, bucket_name, file_name)
    return _orig_create_file(self, bucket_name, file_name, *args, **kwargs)
def _delete_file(self, bucket_name, file_name):
    _check_preconditions(self, bucket_name, file_name, deleting=True)
    return _orig_delete_file(self, bucket_name, file_name)
_orig_create_resumable = _Storage.create_resumable_upload
def _create_resumable(self, bucket_name, file_name, *args, **kwargs):
    _check_preconditions(self, bucket_name, file_name)
    return _orig_create_resumable(self, bucket_name, file_name, *args, **kwargs)
_Storage.create_file, _Storage.delete_file = _create_file, _delete_file
_Storage.create_resumable_upload = _create_resumable
_orig_handle = gse.Router.handle
def _handle(self, method):
    _current.query = _parse_qs(_urlparse(self._request_handler.path).query)
    try:
        return _orig_handle(self, method)
    except _PreconditionFailed as e:  # nothing was sent yet: the handler raised before close()
        response = gse.Response(self._request_handler)
        response.status = gse.HTTPStatus.PRECONDITION_FAILED
        response.json({"error": {"code": 412, "message": str(e),
                                 "errors": [{"reason": "conditionNotMet", "message": str(e)}]}})
        response.close()
    finally:
        _current.query = {}
gse.Router.handle = _handle

ap = argparse.ArgumentParser()
ap.add_argument("--http-port", type=int, default=9023)
ap.add_argument("--https-port", type=int, default=443)
ap.add_argument("--cert"); ap.add_argument("--key")
ap.add_argument("--data-dir")
ap.add_argument("-v", action="store_true")
a = ap.parse_args()
logging.basicConfig(level=logging.INFO if a.v else logging.WARNING, format="%(asctime)s %(message)s")
storage = Storage(use_memory_fs=a.data_dir is None, data_dir=a.data_dir)
lock = threading.Lock()
class H(gse.RequestHandler):
    def handle_one_request(self):
        with lock:  # the emulator's store is not thread-safe; serialise requests
            super().handle_one_request()
    def parse_request(self):
        ok = super().parse_request()
        if ok and os.environ.get("EMU_DUMP_HEADERS") and self.command in ("PUT", "POST"):
            logging.warning("%s %s headers=%s", self.command, self.path, dict(self.headers))
        if ok and self.headers.get("Expect", "").lower() == "100-continue":
            # TF's curl waits 1 s for this before sending a body; http.server sends it only for HTTP/1.1
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n"); self.wfile.flush()
        return ok
def serve(port, tls):
    httpd = hs.ThreadingHTTPServer(("127.0.0.1", port), partial(H, storage))
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(a.cert, a.key)
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print("listening", "https" if tls else "http", port, flush=True)
    httpd.serve_forever()
ts = [threading.Thread(target=serve, args=(a.http_port, False), daemon=True)]
if a.https_port:
    ts.append(threading.Thread(target=serve, args=(a.https_port, True), daemon=True))
for t in ts: t.start()
for t in ts: t.join()
