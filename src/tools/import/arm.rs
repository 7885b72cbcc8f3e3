//! Reads the JSON shapes an Azure Firewall Policy comes in: an ARM template (also what Bicep
//! compiles to, with `resources` as an array or, in language version 2.0, an object), a single
//! rule collection group (the REST shape with `properties`, or the az CLI's flattened one), and
//! the az CLI's list output (an array of groups). IP groups and policies are picked up from the
//! same inputs. Only the few ARM template functions that name resources are evaluated
//! (`parameters`, `variables`, `concat`, `format`, `resourceId`): enough to resolve names and
//! references, not a template engine.

use serde_json::{Map, Value};

/// A `Microsoft.Network/firewallPolicies` resource.
#[derive(Debug, Clone)]
pub(super) struct PolicyDoc {
    pub name: String,
    /// The parent policy's name (`basePolicy.id`, last segment).
    pub base: Option<String>,
    pub props: Value,
}

/// A rule collection group, with its rule collections still as JSON.
#[derive(Debug, Clone)]
pub(super) struct GroupDoc {
    /// The policy it belongs to, when the input says (name or id); `None`: a lone group.
    pub policy: Option<String>,
    pub name: String,
    pub priority: Option<i64>,
    pub collections: Vec<Value>,
    pub origin: String,
    /// Position in the input, to keep the order of groups with equal priorities stable.
    pub index: usize,
}

/// A `Microsoft.Network/ipGroups` resource.
#[derive(Debug, Clone)]
pub(super) struct IpGroupDoc {
    pub name: String,
    pub addresses: Vec<String>,
}

/// Everything found in the inputs.
#[derive(Debug, Default)]
pub(super) struct Inventory {
    pub policies: Vec<PolicyDoc>,
    pub groups: Vec<GroupDoc>,
    pub ip_groups: Vec<IpGroupDoc>,
    /// (where, sentence): resources that are not imported, and why.
    pub ignored: Vec<(String, String)>,
    /// (where, sentence): things that are rules but cannot be imported (classic rules).
    pub lost: Vec<(String, String)>,
}

/// Template context for ARM expressions.
#[derive(Clone, Copy)]
struct Tpl<'a> {
    params: Option<&'a Map<String, Value>>,
    vars: Option<&'a Map<String, Value>>,
}

const NO_TPL: Tpl<'static> = Tpl {
    params: None,
    vars: None,
};

/// Reads one input document into the inventory.
pub(super) fn read(origin: &str, v: &Value, inv: &mut Inventory) -> Result<(), String> {
    match v {
        Value::Array(items) => {
            for it in items {
                read_value(origin, it, NO_TPL, None, inv)?;
            }
            Ok(())
        }
        Value::Object(o) => {
            let is_template = o.contains_key("resources")
                && (o.contains_key("$schema") || o.contains_key("contentVersion"));
            if is_template {
                let tpl = Tpl {
                    params: o.get("parameters").and_then(Value::as_object),
                    vars: o.get("variables").and_then(Value::as_object),
                };
                for r in resources(o) {
                    read_value(origin, r, tpl, None, inv)?;
                }
                Ok(())
            } else {
                read_value(origin, v, NO_TPL, None, inv)
            }
        }
        _ => Err("the JSON is neither an object nor an array of objects".into()),
    }
}

/// A template's (or a resource's nested) resources: an array, or an object of symbolic names.
fn resources(o: &Map<String, Value>) -> Vec<&Value> {
    match o.get("resources") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Object(m)) => m.values().collect(),
        _ => Vec::new(),
    }
}

fn read_value(
    origin: &str,
    v: &Value,
    tpl: Tpl,
    parent_policy: Option<&str>,
    inv: &mut Inventory,
) -> Result<(), String> {
    let Some(o) = v.as_object() else {
        return Err("an array element is not a JSON object".into());
    };
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let props = o.get("properties").unwrap_or(v);
    let name = match o.get("name").and_then(Value::as_str) {
        Some(n) => eval(n, tpl)?,
        None => String::new(),
    };
    let id = o.get("id").and_then(Value::as_str).unwrap_or("");
    let has = |k: &str| props.get(k).is_some();
    if ty.ends_with("rulecollectiongroups") || (ty.is_empty() && has("ruleCollections")) {
        let (policy, gname) = match name.rsplit_once('/') {
            Some((p, g)) => (Some(last_segment(p).to_string()), g.to_string()),
            None => (
                parent_policy
                    .map(str::to_string)
                    .or_else(|| segment_after(id, "firewallPolicies")),
                name,
            ),
        };
        let priority = match props.get("priority") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => eval(s, tpl)?.trim().parse().ok(),
            _ => None,
        };
        // Rules name IP groups with expressions (`[resourceId(..., variables('x'))]`) that
        // need this template's parameters and variables: evaluate them here.
        let collections = props
            .get("ruleCollections")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|c| eval_deep(c, tpl)).collect())
            .unwrap_or_default();
        let index = inv.groups.len();
        inv.groups.push(GroupDoc {
            policy,
            name: gname,
            priority,
            collections,
            origin: origin.to_string(),
            index,
        });
    } else if ty == "microsoft.network/firewallpolicies"
        || (ty.is_empty() && (has("basePolicy") || has("threatIntelMode") || has("dnsSettings")))
    {
        let pname = last_segment(&name).to_string();
        let base = match props
            .get("basePolicy")
            .and_then(|b| b.get("id"))
            .and_then(Value::as_str)
        {
            Some(b) => Some(last_segment(&eval(b, tpl)?).to_string()),
            None => None,
        };
        inv.policies.push(PolicyDoc {
            name: pname.clone(),
            base,
            props: props.clone(),
        });
        for r in resources(o) {
            read_value(origin, r, tpl, Some(&pname), inv)?;
        }
    } else if ty == "microsoft.network/ipgroups" || (ty.is_empty() && has("ipAddresses")) {
        let mut addresses = Vec::new();
        for a in props
            .get("ipAddresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = a.as_str() {
                addresses.push(eval(s, tpl)?);
            }
        }
        inv.ip_groups.push(IpGroupDoc {
            name: last_segment(&name).to_string(),
            addresses,
        });
    } else if ty == "microsoft.network/azurefirewalls" {
        let classic = [
            "networkRuleCollections",
            "applicationRuleCollections",
            "natRuleCollections",
        ];
        let n: usize = classic
            .iter()
            .filter_map(|k| props.get(*k).and_then(Value::as_array))
            .map(Vec::len)
            .sum();
        if n > 0 {
            inv.lost.push((
                format!("azureFirewalls/{name}"),
                format!("{n} classic rule collection(s) on the firewall itself are not imported: migrate them to a Firewall Policy first (Azure: az network firewall policy create + migration)"),
            ));
        } else {
            inv.ignored.push((
                format!("{origin}: {name}"),
                "the firewall resource itself (not a policy): ignored".into(),
            ));
        }
    } else {
        let what = if ty.is_empty() {
            "an object with no type".to_string()
        } else {
            format!("a resource of type {ty}")
        };
        inv.ignored.push((
            format!("{origin}: {}", if name.is_empty() { "?" } else { &name }),
            format!("{what}, not part of a Firewall Policy: ignored"),
        ));
    }
    Ok(())
}

/// A copy of `v` with every string that is an ARM expression evaluated (one that cannot be is
/// kept as it is, and reported where it is used).
fn eval_deep(v: &Value, tpl: Tpl) -> Value {
    match v {
        Value::String(s) => Value::String(eval(s, tpl).unwrap_or_else(|_| s.clone())),
        Value::Array(a) => Value::Array(a.iter().map(|x| eval_deep(x, tpl)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), eval_deep(x, tpl)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The last `/`-separated segment of a name or resource id.
pub(super) fn last_segment(s: &str) -> &str {
    s.trim_end_matches('/').rsplit('/').next().unwrap_or(s)
}

/// The segment after `key` (ASCII case-insensitive) in a resource id.
fn segment_after(id: &str, key: &str) -> Option<String> {
    let mut it = id.split('/');
    while let Some(s) = it.next() {
        if s.eq_ignore_ascii_case(key) {
            return it.next().map(str::to_string);
        }
    }
    None
}

/// Evaluates a string that may be an ARM expression (`"[...]"`; `"[["` escapes a literal `[`).
pub(super) fn eval_str(s: &str) -> Result<String, String> {
    eval(s, NO_TPL)
}

fn eval(s: &str, tpl: Tpl) -> Result<String, String> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("[[") {
        return Ok(format!("[{rest}"));
    }
    if !(t.starts_with('[') && t.ends_with(']')) {
        return Ok(s.to_string());
    }
    let mut p = Parser {
        s: &t.as_bytes()[1..t.len() - 1],
        i: 0,
        tpl,
    };
    let v = p.expr()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("the ARM expression {s} is not understood (only parameters, variables, concat, format and resourceId are evaluated)"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    tpl: Tpl<'a>,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn expr(&mut self) -> Result<String, String> {
        self.ws();
        if self.s.get(self.i) == Some(&b'\'') {
            self.i += 1;
            let mut out = Vec::new();
            loop {
                match self.s.get(self.i) {
                    None => return Err("an ARM string literal is not closed".into()),
                    Some(b'\'') if self.s.get(self.i + 1) == Some(&b'\'') => {
                        out.push(b'\'');
                        self.i += 2;
                    }
                    Some(b'\'') => {
                        self.i += 1;
                        break;
                    }
                    Some(&c) => {
                        out.push(c);
                        self.i += 1;
                    }
                }
            }
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        let func = String::from_utf8_lossy(&self.s[start..self.i]).to_ascii_lowercase();
        self.ws();
        if func.is_empty() || self.s.get(self.i) != Some(&b'(') {
            return Err(format!(
                "the ARM expression is not understood near \"{}\"",
                String::from_utf8_lossy(&self.s[start..])
            ));
        }
        self.i += 1;
        let mut args = Vec::new();
        loop {
            self.ws();
            if self.s.get(self.i) == Some(&b')') {
                self.i += 1;
                break;
            }
            args.push(self.expr()?);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b')') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(format!("the ARM function {func}() is not closed")),
            }
        }
        self.call(&func, args)
    }

    fn call(&self, func: &str, args: Vec<String>) -> Result<String, String> {
        let one = |what: &str| -> Result<&String, String> {
            args.first()
                .ok_or_else(|| format!("the ARM function {what}() needs an argument"))
        };
        match func {
            "concat" => Ok(args.concat()),
            "format" => {
                let mut out = one("format")?.clone();
                for (i, a) in args.iter().enumerate().skip(1) {
                    out = out.replace(&format!("{{{}}}", i - 1), a);
                }
                Ok(out)
            }
            "parameters" => {
                let n = one("parameters")?;
                let v = self
                    .tpl
                    .params
                    .and_then(|p| p.get(n))
                    .and_then(|p| p.get("defaultValue"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        format!("the template parameter \"{n}\" has no string defaultValue")
                    })?;
                eval(v, self.tpl)
            }
            "variables" => {
                let n = one("variables")?;
                let v = self
                    .tpl
                    .vars
                    .and_then(|p| p.get(n))
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("the template variable \"{n}\" is not a string"))?;
                eval(v, self.tpl)
            }
            "resourceid" | "extensionresourceid" | "subscriptionresourceid" => {
                // resourceId([subscriptionId], [resourceGroup], type, name1, name2...)
                let t = args
                    .iter()
                    .position(|a| a.contains('/') && a.contains('.'))
                    .ok_or_else(|| "resourceId() without a resource type".to_string())?;
                let mut types = args[t].split('/');
                let mut out = format!("/providers/{}", types.next().unwrap_or(""));
                for (ty, name) in types.zip(&args[t + 1..]) {
                    out.push('/');
                    out.push_str(ty);
                    out.push('/');
                    out.push_str(name);
                }
                Ok(out)
            }
            o => Err(format!(
                "the ARM function {o}() is not evaluated (only parameters, variables, concat, format and resourceId are)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arm_expressions_that_name_resources() {
        let t = json!({"parameters": {"p": {"type": "string", "defaultValue": "fw-pol"}},
                        "variables": {"v": "[concat(parameters('p'), '-x')]"}});
        let tpl = Tpl {
            params: t["parameters"].as_object(),
            vars: t["variables"].as_object(),
        };
        assert_eq!(eval("plain", tpl).unwrap(), "plain");
        assert_eq!(eval("[[literal]", tpl).unwrap(), "[literal]");
        assert_eq!(
            eval("[concat(parameters('p'), '/Default')]", tpl).unwrap(),
            "fw-pol/Default"
        );
        assert_eq!(eval("[variables('v')]", tpl).unwrap(), "fw-pol-x");
        assert_eq!(eval("[format('{0}/{1}', 'a', 'b')]", tpl).unwrap(), "a/b");
        assert_eq!(eval("['it''s']", tpl).unwrap(), "it's");
        let id = eval(
            "[resourceId('Microsoft.Network/ipGroups', 'ipg-nodes')]",
            tpl,
        )
        .unwrap();
        assert_eq!(last_segment(&id), "ipg-nodes");
        let id = eval(
            "[resourceId('rg', 'Microsoft.Network/firewallPolicies/ruleCollectionGroups', 'pol', 'g')]",
            tpl,
        )
        .unwrap();
        assert_eq!(
            segment_after(&id, "firewallpolicies").as_deref(),
            Some("pol")
        );
        assert!(eval("[reference('x').id]", tpl).is_err());
        assert!(eval("[parameters('missing')]", tpl).is_err());
    }
}
