#!/usr/bin/env python3
"""Offline checks of the ARM template and of the parameters deploy-ha.sh writes.

    python3 vm-image/azure/check-templates.py [azuredeploy-ha.json] [params.json]

No Azure access and no published ARM schema here, so this checks what can be checked locally:
- well-formed JSON; the deploymentTemplate skeleton ($schema, contentVersion, parameters,
  variables, resources, outputs) against a JSON Schema written here (jsonschema)
- every resource has type, apiVersion (YYYY-MM-DD[-preview]), name; locations are expressions
- every template expression "[...]" has balanced parentheses and quotes and only uses known
  ARM template functions
- every parameters('x') / variables('x') names a declared parameter / variable
- every dependsOn resourceId(...) names a resource type declared in the template
- parameter defaults match their types and allowedValues
- a parameters file: every name is declared, every parameter without a default is given, values
  match the declared types
Exit 1 on the first class of errors found; prints what passed.
"""
import json
import re
import sys
from pathlib import Path

try:
    import jsonschema
except ImportError:  # pragma: no cover
    jsonschema = None

HERE = Path(__file__).resolve().parent

SKELETON = {
    "type": "object",
    "required": ["$schema", "contentVersion", "resources"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "pattern": r"^https://schema\.management\.azure\.com/schemas/.*/deploymentTemplate\.json#$"},
        "contentVersion": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$"},
        "metadata": {"type": "object"},
        "apiProfile": {"type": "string"},
        "functions": {"type": "array"},
        "parameters": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["type"],
                "additionalProperties": False,
                "properties": {
                    "type": {"enum": ["string", "securestring", "int", "bool", "object", "secureObject", "array"]},
                    "defaultValue": {},
                    "allowedValues": {"type": "array"},
                    "minValue": {"type": "integer"},
                    "maxValue": {"type": "integer"},
                    "minLength": {"type": "integer"},
                    "maxLength": {"type": "integer"},
                    "metadata": {"type": "object"},
                },
            },
        },
        "variables": {"type": "object"},
        "resources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["type", "apiVersion", "name"],
                "properties": {
                    "type": {"type": "string", "pattern": r"^Microsoft\.[A-Za-z]+/[A-Za-z/]+$"},
                    "apiVersion": {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$"},
                    "name": {"type": "string"},
                    "location": {"type": "string"},
                    "dependsOn": {"type": "array", "items": {"type": "string"}},
                    "properties": {"type": "object"},
                    "sku": {"type": "object"},
                    "zones": {},
                    "tags": {},
                },
            },
        },
        "outputs": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["type", "value"],
            },
        },
    },
}

# ARM template functions (learn.microsoft.com "Template functions"), the ones a template may use.
FUNCTIONS = set("""
array bool concat contains createArray createObject empty first indexOf intersection json last
lastIndexOf length max min range skip take union coalesce equals greater greaterOrEquals less
lessOrEquals and if not or true false null dateTimeAdd dateTimeFromEpoch dateTimeToEpoch
utcNow deployment environment parameters variables extensionResourceId list listKeys listSecrets
pickZones providers reference resourceGroup resourceId subscription subscriptionResourceId
managementGroup managementGroupResourceId tenant tenantResourceId base64 base64ToJson
base64ToString dataUri dataUriToString endsWith format guid int padLeft replace split startsWith
string substring toLower toUpper trim uniqueString uri uriComponent uriComponentToString add div
mod mul sub copyIndex items filter map reduce sort toObject lambda lambdaVariables
""".split())

errors = []


def err(msg):
    errors.append(msg)


def walk(node, path="$"):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, node


def expressions(doc):
    for path, v in walk(doc):
        if isinstance(v, str) and v.startswith("[") and v.endswith("]") and not v.startswith("[["):
            yield path, v[1:-1]


def check_expression(path, expr, params, variables):
    depth = 0
    in_str = False
    i = 0
    while i < len(expr):
        c = expr[i]
        if in_str:
            if c == "'":
                if i + 1 < len(expr) and expr[i + 1] == "'":
                    i += 1
                else:
                    in_str = False
        elif c == "'":
            in_str = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                err(f"{path}: unbalanced ')' in [{expr}]")
                return
        i += 1
    if in_str or depth != 0:
        err(f"{path}: unbalanced quotes or parentheses in [{expr}]")
        return
    code = re.sub(r"'(?:[^']|'')*'", "''", expr)
    for fn in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", code):
        if fn not in FUNCTIONS:
            err(f"{path}: unknown template function {fn}() in [{expr}]")
    for name in re.findall(r"parameters\('([^']*)'\)", expr):
        if name not in params:
            err(f"{path}: parameters('{name}') is not declared")
    for name in re.findall(r"variables\('([^']*)'\)", expr):
        if name not in variables:
            err(f"{path}: variables('{name}') is not declared")


def type_ok(ptype, value):
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        return True  # an expression
    return {
        "string": lambda v: isinstance(v, str),
        "securestring": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "secureObject": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }[ptype](value)


def check_template(path):
    doc = json.loads(Path(path).read_text())
    if jsonschema is not None:
        try:
            jsonschema.validate(doc, SKELETON)
        except jsonschema.ValidationError as e:
            err(f"{path}: skeleton schema: {e.message} at {list(e.absolute_path)}")
    params = doc.get("parameters", {})
    variables = doc.get("variables", {})
    for name, p in params.items():
        if "defaultValue" in p:
            if not type_ok(p["type"], p["defaultValue"]):
                err(f"{path}: parameter {name}: default {p['defaultValue']!r} is not a {p['type']}")
            if "allowedValues" in p and p["defaultValue"] not in p["allowedValues"]:
                err(f"{path}: parameter {name}: default not in allowedValues")
    for epath, expr in expressions(doc):
        check_expression(epath, expr, params, variables)
    declared = {r["type"] for r in doc.get("resources", [])}
    for r in doc.get("resources", []):
        loc = r.get("location")
        if loc is not None and not (loc.startswith("[") or loc == "global"):
            err(f"{path}: {r['type']} location {loc!r} is a literal: use parameters('location')")
        for d in r.get("dependsOn", []):
            m = re.match(r"\[resourceId\('([^']+)'", d)
            if m and m.group(1) not in declared:
                err(f"{path}: {r['type']} depends on {m.group(1)}, which the template does not declare")
    print(f"{path}: {len(doc.get('resources', []))} resources, {len(params)} parameters, "
          f"{sum(1 for _ in expressions(doc))} expressions checked")
    return doc


def check_params(path, template):
    doc = json.loads(Path(path).read_text())
    declared = template.get("parameters", {})
    given = doc.get("parameters", {})
    for name, v in given.items():
        if name not in declared:
            err(f"{path}: parameter {name} is not declared by the template")
            continue
        if "value" not in v:
            err(f"{path}: parameter {name} has no value")
            continue
        if not type_ok(declared[name]["type"], v["value"]):
            err(f"{path}: parameter {name}: {v['value']!r} is not a {declared[name]['type']}")
        allowed = declared[name].get("allowedValues")
        if allowed and v["value"] not in allowed:
            err(f"{path}: parameter {name}: {v['value']!r} not in {allowed}")
    for name, p in declared.items():
        if "defaultValue" not in p and name not in given:
            err(f"{path}: required parameter {name} is missing")
    print(f"{path}: {len(given)} parameters match the template")


def main():
    tpath = sys.argv[1] if len(sys.argv) > 1 else str(HERE / "azuredeploy-ha.json")
    template = check_template(tpath)
    if len(sys.argv) > 2:
        check_params(sys.argv[2], template)
    if errors:
        for e in errors:
            print("ERROR", e)
        sys.exit(1)
    print("ok" + ("" if jsonschema else " (jsonschema not installed: skeleton schema skipped)"))


if __name__ == "__main__":
    main()
