"""docs/openapi.yaml against the code: the document parses, every route
of the module's route table (ngx_module/ngx_http_fc_module.c and the
API routes of ngx_module/ngx_http_fc_api.h) is in it with its method
and nothing else is, every $ref resolves, every schema is a valid JSON
Schema, and every documented error answer has the shared Error shape.

Nothing here needs the stack; the other tests check real answers
against the document (fc.check_openapi).  check_text() below is their
helper for answers that are not JSON.
"""

import copy
import os
import re

import jsonschema
import pytest
import yaml

import fc

MODULE = os.path.join(fc.ROOT, "ngx_module", "ngx_http_fc_module.c")
API_HEADER = os.path.join(fc.ROOT, "ngx_module", "ngx_http_fc_api.h")

METHODS = {"NGX_HTTP_GET": "get", "NGX_HTTP_HEAD": "head",
           "NGX_HTTP_POST": "post", "NGX_HTTP_PUT": "put",
           "NGX_HTTP_FC_PUT": "put", "NGX_HTTP_PATCH": "patch",
           "NGX_HTTP_FC_PATCH": "patch", "NGX_HTTP_DELETE": "delete"}

OPERATIONS = ("get", "head", "post", "put", "patch", "delete", "options",
              "trace")


# ---------------------------------------------------------------------
# the route table

def routes_in(path):
    """(method, pattern, flags) of every ngx_http_fc_route() and
    ngx_http_fc_sql() entry of a C file, "{}" standing for a path
    parameter; the macros' own definitions are left out."""
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("\\\n", "\n")
    found = []
    for m in re.finditer(r'ngx_http_fc_(route|sql)\(\s*"[^"]*"\s*,'
                         r'\s*([A-Z_|]+)\s*,\s*"([^"]+)"([^()]*)\)', text):
        kind, methods, pattern, rest = m.groups()
        flags = rest.rsplit(",", 1)[-1]
        for name in methods.split("|"):
            found.append((METHODS[name.strip()], pattern, flags))
    return found


def code_routes():
    """{(pattern, method)} of every route nginx answers in production
    (the test-only routes left out); HEAD, answered with GET, is not a
    route of its own."""
    out = set()
    for method, pattern, flags in routes_in(MODULE) + routes_in(API_HEADER):
        if "NGX_HTTP_FC_TEST_ONLY" in flags or method == "head":
            continue
        out.add((pattern, method))
    return out


def template(path):
    """/api/v1/cards/{id} as the route table writes it: /api/v1/cards/{}."""
    return re.sub(r"\{[^}/]+\}", "{}", path)


# ---------------------------------------------------------------------
# the document

@pytest.fixture(scope="module")
def doc():
    with open(fc.OPENAPI, encoding="utf-8") as f:
        return yaml.safe_load(f)


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in OPERATIONS:
                yield path, method, op


def resolve(doc, node):
    return fc._resolve(doc, node)


def refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for v in node.values():
            yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def has_error_shape(doc, schema, seen=()):
    """The schema is components.schemas.Error, or all of (allOf) a
    schema that is."""
    if "$ref" in schema:
        if schema["$ref"] == "#/components/schemas/Error":
            return True
        if schema["$ref"] in seen:
            return False
        return has_error_shape(doc, resolve(doc, schema),
                               seen + (schema["$ref"],))
    return any(has_error_shape(doc, s, seen) for s in schema.get("allOf",
                                                                 []))


def test_the_document_parses_as_openapi_3_0(doc):
    assert str(doc["openapi"]).startswith("3.0.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["paths"] and doc["components"]["schemas"]


def test_every_route_of_the_code_is_documented_and_nothing_else(doc):
    code = code_routes()
    assert ("/pos/v1/authorize", "post") in code, "the table was read"
    assert ("/api/v1/backoffice/calendar/{}/{}", "put") in code
    documented = {(template(p), m) for p, m, _ in operations(doc)}

    missing = sorted(code - documented)
    assert not missing, f"routes not in docs/openapi.yaml: {missing}"
    extra = sorted(documented - code)
    assert not extra, f"docs/openapi.yaml documents no route: {extra}"


def test_every_path_parameter_is_declared(doc):
    for path, method, op in operations(doc):
        params = [resolve(doc, p) for p in op.get("parameters", [])
                  + doc["paths"][path].get("parameters", [])]
        declared = {p["name"] for p in params if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}/]+)\}", path)), \
            (method, path)


def test_every_operation_id_is_unique(doc):
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids
                                             if ids.count(i) > 1)


def test_every_ref_resolves(doc):
    for ref in set(refs(doc)):
        assert ref.startswith("#/components/"), ref
        resolve(doc, {"$ref": ref})


def test_every_schema_is_valid_json_schema(doc):
    converted = copy.deepcopy(doc)
    fc._nullable_to_type(converted)
    for name, schema in converted["components"]["schemas"].items():
        try:
            jsonschema.Draft4Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise AssertionError(f"components.schemas.{name}: {e.message}")


def test_every_error_answer_has_the_shared_error_shape(doc):
    checked = 0
    for path, method, op in operations(doc):
        for status, response in op["responses"].items():
            if status != "default" and int(status) < 400:
                continue
            response = resolve(doc, response)
            where = f"{method.upper()} {path} {status}"
            assert list(response.get("content", {})) == \
                ["application/json"], f"{where}: errors are JSON only"
            schema = response["content"]["application/json"]["schema"]
            assert has_error_shape(doc, schema), \
                f"{where}: the schema is not the Error shape"
            checked += 1
    assert checked > 200


def test_every_operation_documents_405_and_401_if_it_needs_a_login(doc):
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert "405" in op["responses"], where
        if any(op.get("security", doc.get("security", []))):
            assert "401" in op["responses"], where


# ---------------------------------------------------------------------
# a helper of the other tests

def check_text(response, path, method="GET", doc=None):
    """Assert that a Response that is not JSON is what docs/openapi.yaml
    promises for path/method/status: the document lists its media type,
    and the body is one of the values of the schema's enum if it has
    one.  Returns the body as text, decoded in the charset of its
    Content-Type (UTF-8 without one)."""
    doc = doc or fc.openapi_document()
    op = doc["paths"][path][method.lower()]
    answer = op["responses"].get(str(response.status))
    assert answer is not None, \
        f"{method.upper()} {path} documents no {response.status} answer"
    content = resolve(doc, answer)["content"]
    assert response.content_type in content, \
        (f"{method.upper()} {path} {response.status}: "
         f"{response.content_type!r} is not in {sorted(content)}")
    charset = re.search(r"charset=([A-Za-z0-9_-]+)",
                        response.headers.get("content-type", ""))
    text = response.body.decode(charset.group(1) if charset else "utf-8")
    schema = content[response.content_type]["schema"]
    if "enum" in schema:
        assert text in schema["enum"], (text, schema["enum"])
    return text
