//! `tollgate import azure-policy` on realistic policies written for these tests, one per JSON
//! shape: an ARM template (with nested and top-level groups and ARM expressions), a single rule
//! collection group (REST shape) with IP groups from `az network ip-group list`, the az CLI's
//! group list with a Premium policy full of unsupported features, and a parent + child pair
//! (Bicep's symbolic-name template) with a basePolicy. Each output must pass `tollgate check`,
//! and `explain` must give, for a table of flows, the decision Azure's documented processing
//! gives: DNAT, then network, then application rules; groups, then collections by priority;
//! first match wins; the parent's collections first; default deny. Where a feature is not
//! carried over, the table says what Azure does and Tollgate must never allow more.

use std::path::Path;
use std::process::Command;

use tollgate::config::{load_str, Loaded};
use tollgate::tools::explain::{explain, parse_query};
use tollgate::tools::import::azure::{import, Base, Effect, Imported, Options};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/azure");

fn read(name: &str) -> (String, serde_json::Value) {
    let p = Path::new(DIR).join(name);
    let t = std::fs::read_to_string(&p).unwrap();
    (name.to_string(), serde_json::from_str(&t).unwrap())
}

fn base() -> Base {
    base_named("base.toml")
}

fn base_named(name: &str) -> Base {
    let p = Path::new(DIR).join(name);
    let t = std::fs::read_to_string(&p).unwrap();
    Base::parse(&p.display().to_string(), &t).unwrap()
}

fn run(files: &[&str], public_ips: &[(&str, &str)]) -> (Imported, Loaded) {
    run_into(base(), files, public_ips)
}

fn run_into(base: Base, files: &[&str], public_ips: &[(&str, &str)]) -> (Imported, Loaded) {
    let inputs: Vec<_> = files.iter().map(|f| read(f)).collect();
    let opts = Options {
        policy: None,
        public_ips: public_ips
            .iter()
            .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
            .collect(),
        base: Some(base),
    };
    let out = import(&inputs, &opts).unwrap();
    // Named in the fixtures' directory: a relative service_tags_file resolves there.
    let loaded = match load_str(&out.toml, &format!("{DIR}/imported.toml")) {
        Ok(l) => l,
        Err(e) => panic!(
            "the output does not pass check:\n{}\n---\n{}",
            e.errors()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            out.toml
        ),
    };
    (out, loaded)
}

/// The decision `explain` prints, condensed: "allow G/C/R", "deny G/C/R", "deny default",
/// "dnat A:P G/C/R" or "inspect".
fn decide(l: &Loaded, src: &str, dst: &str, proto: &str, sni: Option<&str>) -> String {
    let q = parse_query(src, dst, proto).unwrap();
    let text = explain(l, &q, sni);
    let mut lines = text.lines();
    let d = lines
        .find_map(|x| x.strip_prefix("decision: "))
        .unwrap_or_else(|| panic!("no decision in:\n{text}"));
    let by = lines
        .next()
        .and_then(|x| x.trim().strip_prefix("by "))
        .map(|x| x.split(" (").next().unwrap_or(x).to_string());
    if d.starts_with("deny (default") {
        return "deny default".into();
    }
    if d.starts_with("needs inspection") {
        return "inspect".into();
    }
    if let Some(to) = d.strip_prefix("DNAT to ") {
        return format!("dnat {to} {}", by.unwrap_or_default());
    }
    format!("{d} {}", by.unwrap_or_default())
}

/// (src, dst, proto, sni, what Azure decides, what Tollgate must decide).
type Flow<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, &'a str, &'a str);

fn check_flows(l: &Loaded, flows: &[Flow]) {
    let mut bad = Vec::new();
    for &(src, dst, proto, sni, azure, want) in flows {
        let got = decide(l, src, dst, proto, sni);
        if got != want {
            bad.push(format!(
                "{src} -> {dst} {proto} {sni:?}: got \"{got}\", want \"{want}\" (Azure: {azure})"
            ));
        }
        // Never wider than the source: whatever Tollgate lets through, Azure did too.
        if !got.starts_with("deny") {
            assert!(
                !azure.starts_with("deny"),
                "{src} -> {dst} {proto} {sni:?}: Tollgate \"{got}\" but Azure denies"
            );
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn arm_template_aks_egress_is_carried_over_whole() {
    let (out, l) = run(&["aks-egress-arm.json"], &[]);
    assert!(!out.left_out(), "{:#?}", out.findings);
    assert_eq!((out.rules_in, out.rules_out), (8, 8));
    assert_eq!(out.policies, ["fwpol-aks"]);
    assert!(out
        .toml
        .contains("# from: fwpol-aks/aks-network/aks-net/apiserver-udp (NetworkRule)"));
    assert!(out
        .toml
        .contains("# description: tunnel front (konnectivity)"));
    assert!(
        out.toml.contains("servers = [\"192.0.2.53\"]"),
        "{}",
        out.toml
    );
    // Ranges become exact prefixes.
    assert!(out.toml.contains("sources = [\"198.19.0.0/16\"]"));
    assert!(out.toml.contains("destinations = [\"198.51.100.16/28\"]"));
    assert_eq!(
        l.dns.servers,
        ["192.0.2.53".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let a = "Azure: allow";
    check_flows(
        &l,
        &[
            (
                "198.18.0.10",
                "203.0.113.70:1194",
                "udp",
                None,
                a,
                "allow aks-network/aks-net/apiserver-udp",
            ),
            (
                "198.18.0.10",
                "203.0.113.70:443",
                "tcp",
                Some("mcr.microsoft.com"),
                "allow (network rules first)",
                "allow aks-network/aks-net/apiserver-tcp",
            ),
            (
                "198.19.1.5",
                "198.51.100.20:8443",
                "tcp",
                None,
                a,
                "allow aks-network/aks-net/pods-to-partner-range",
            ),
            // The deny collection (priority 100) comes before the allow one (200).
            (
                "198.19.1.5",
                "198.51.100.20:8444",
                "tcp",
                None,
                "deny (collection 100 first)",
                "deny aks-network/deny-partner-admin/no-admin-ports",
            ),
            (
                "198.18.0.10",
                "198.51.100.5:22",
                "tcp",
                None,
                "deny",
                "deny aks-network/deny-partner-admin/no-admin-ports",
            ),
            (
                "198.18.0.10",
                "203.0.113.200:443",
                "tcp",
                Some("mcr.microsoft.com"),
                a,
                "allow aks-application/aks-fqdns/aks-required",
            ),
            (
                "198.19.3.3",
                "203.0.113.200:443",
                "tcp",
                Some("westeurope.hcp.x.azmk8s.io"),
                a,
                "allow aks-application/aks-fqdns/aks-required",
            ),
            (
                "198.18.0.10",
                "203.0.113.200:80",
                "tcp",
                Some("security.ubuntu.com"),
                a,
                "allow aks-application/aks-fqdns/ubuntu-updates",
            ),
            (
                "198.19.1.5",
                "203.0.113.200:443",
                "tcp",
                Some("api.partner.example"),
                a,
                "allow aks-application/aks-fqdns/partner-apis",
            ),
            (
                "198.18.0.10",
                "203.0.113.200:443",
                "tcp",
                Some("api.partner.example"),
                "deny (source)",
                "deny default",
            ),
            (
                "198.18.0.10",
                "203.0.113.200:443",
                "tcp",
                Some("www.example.com"),
                "deny",
                "deny default",
            ),
            (
                "198.18.0.10",
                "203.0.113.200:22",
                "tcp",
                None,
                "deny",
                "deny default",
            ),
        ],
    );
}

#[test]
fn single_group_with_dnat_and_ip_groups() {
    let (out, l) = run(
        &["edge-group.json", "edge-ipgroups.json"],
        &[("203.0.113.10", "203.0.113.1")],
    );
    assert!(!out.left_out(), "{:#?}", out.findings);
    assert_eq!(out.policies, ["fwpol-edge"]);
    assert!(
        out.toml
            .contains("\"ipg-admins\" = [\"192.0.2.0/28\", \"192.0.2.100/30\"]"),
        "{}",
        out.toml
    );
    assert!(out.toml.contains("source_ip_groups = [\"ipg-admins\"]"));
    let a = "Azure: DNAT";
    check_flows(
        &l,
        &[
            (
                "192.0.2.77:50000",
                "203.0.113.1:8080",
                "tcp",
                None,
                a,
                "dnat 198.18.2.20:80 edge-inbound/publish/web",
            ),
            (
                "192.0.2.101",
                "203.0.113.1:2222",
                "tcp",
                None,
                a,
                "dnat 198.18.2.30:22 edge-inbound/publish/admin-ssh",
            ),
            (
                "192.0.2.99",
                "203.0.113.1:2222",
                "tcp",
                None,
                "deny (not an admin)",
                "deny default",
            ),
            (
                "192.0.2.20",
                "203.0.113.1:5353",
                "udp",
                None,
                a,
                "dnat 198.18.2.53:5353 edge-inbound/publish/dns-in",
            ),
            (
                "198.18.2.5",
                "198.51.100.40:5432",
                "tcp",
                None,
                "allow",
                "allow edge-inbound/web-tier/web-to-db",
            ),
            (
                "198.18.2.5",
                "198.51.100.42:5432",
                "tcp",
                None,
                "deny",
                "deny default",
            ),
            (
                "198.18.2.5",
                "203.0.113.99",
                "icmp",
                None,
                "allow",
                "allow edge-inbound/web-tier/web-ping",
            ),
        ],
    );
    // Without --public-ip, the firewall's public IP is not an address of the base config:
    // every DNAT rule is skipped and said so.
    let inputs = vec![read("edge-group.json"), read("edge-ipgroups.json")];
    let opts = Options {
        base: Some(base()),
        ..Options::default()
    };
    let out = import(&inputs, &opts).unwrap();
    let skipped: Vec<_> = out
        .findings
        .iter()
        .filter(|f| f.effect == Effect::Skipped)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        skipped,
        [
            "fwpol-edge/edge-inbound/publish/web",
            "fwpol-edge/edge-inbound/publish/admin-ssh",
            "fwpol-edge/edge-inbound/publish/dns-in"
        ]
    );
    assert!(out.findings[0]
        .message
        .contains("--public-ip 203.0.113.10=ADDRESS"));
    load_str(&out.toml, "x").unwrap();
}

#[test]
fn unsupported_features_are_listed_per_rule_and_never_widen() {
    let (out, l) = run(
        &["premium-policy.json", "premium-groups-cli-list.json"],
        &[],
    );
    assert!(out.left_out());
    let mut got: Vec<(String, Effect)> = out
        .findings
        .iter()
        .map(|f| (f.path.clone(), f.effect))
        .collect();
    got.sort();
    let p = |s: &str| format!("fwpol-premium/{s}");
    let mut want: Vec<(String, Effect)> = vec![
        ("fwpol-premium".into(), Effect::NotEnforced), // threat intelligence
        ("fwpol-premium".into(), Effect::NotEnforced), // IDPS
        ("fwpol-premium".into(), Effect::NotEnforced), // transportSecurity
        ("fwpol-premium".into(), Effect::NotEnforced), // DNS proxy
        (p("hub-web/web-deny/no-gambling"), Effect::DenyWidened),
        (p("hub-web/web-deny/no-uploads"), Effect::DenyWidened),
        (p("hub-web/web-deny/no-uploads"), Effect::NotEnforced),
        (p("hub-web/web-allow/docs-paths"), Effect::Skipped),
        (p("hub-web/web-allow/inspected-saas"), Effect::NotEnforced),
        (p("hub-web/web-allow/inspected-saas"), Effect::NotEnforced),
        (p("hub-web/web-allow/sql-and-web"), Effect::Narrowed),
        (p("hub-web/web-allow/sql-only"), Effect::Narrowed),
        (p("hub-web/web-allow/sql-only"), Effect::Skipped),
        (p("hub-web/web-allow/contoso-suffix"), Effect::Narrowed),
        (p("hub-web/web-allow/categories"), Effect::Skipped),
        (p("hub-web/web-allow/windows-update"), Effect::Skipped),
        (
            p("hub-network/net-deny/no-storage-from-lab"),
            Effect::DenyWidened,
        ),
        (
            p("hub-network/net-allow/monitor-and-range"),
            Effect::Narrowed,
        ),
        (p("hub-network/net-allow/azurecloud-only"), Effect::Skipped),
        (p("hub-network/net-allow/missing-ipgroup"), Effect::Skipped),
        (p("hub-network/net-allow/wildcard-fqdn"), Effect::Skipped),
        (p("hub-network/nat-fqdn/to-backend-name"), Effect::Skipped),
    ];
    want.sort();
    assert_eq!(got, want, "{:#?}", out.findings);
    // The report is at the top of the file too, and each rule carries its own lines.
    assert!(
        out.toml
            .contains("# NOT carried over as in Azure (22 item(s); 8 of 16 rule(s) written):"),
        "{}",
        &out.toml[..2000.min(out.toml.len())]
    );
    assert!(out
        .toml
        .contains("    # deny widened: webCategories (Gambling) are not supported"));
    // Network rules come before application rules whatever the groups' priorities (hub-web is
    // 100, hub-network 300); a widened deny denies what Azure denied and more, never less.
    check_flows(
        &l,
        &[
            (
                "198.18.16.5",
                "203.0.113.80:443",
                "tcp",
                Some("files.example.net"),
                "allow (network rule before the application deny)",
                "allow hub-network/net-allow/everything-else-web",
            ),
            (
                "198.18.0.9",
                "198.51.100.10:443",
                "tcp",
                None,
                "allow",
                "allow hub-network/net-allow/monitor-and-range",
            ),
            (
                "198.18.9.5",
                "198.51.100.10:443",
                "tcp",
                None,
                "allow (not Storage)",
                "deny hub-network/net-deny/no-storage-from-lab",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:443",
                "tcp",
                Some("app.saas.example"),
                "allow",
                "allow hub-web/web-allow/inspected-saas",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:443",
                "tcp",
                Some("docs.example.org"),
                "allow (only /product/*)",
                "deny default",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:443",
                "tcp",
                Some("db.sql.example"),
                "allow",
                "allow hub-web/web-allow/sql-and-web",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:1433",
                "tcp",
                Some("db.sql.example"),
                "allow (Mssql)",
                "deny default",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:443",
                "tcp",
                Some("www.contoso.example"),
                "allow",
                "allow hub-web/web-allow/contoso-suffix",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:443",
                "tcp",
                Some("contoso.example"),
                "allow",
                "allow hub-web/web-allow/contoso-suffix",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:443",
                "tcp",
                Some("xcontoso.example"),
                "allow",
                "deny default",
            ),
            (
                "198.18.8.5",
                "203.0.113.80:443",
                "tcp",
                Some("news.example"),
                "deny (default)",
                "deny hub-web/web-deny/no-gambling",
            ),
            (
                "198.18.9.5",
                "203.0.113.80:443",
                "tcp",
                Some("files.example.net"),
                // The widened network deny decides before the application deny.
                "deny (no-uploads, or default)",
                "deny hub-network/net-deny/no-storage-from-lab",
            ),
            (
                "198.18.0.9",
                "203.0.113.80:443",
                "tcp",
                Some("www.microsoft.com"),
                "allow (ComputersAndTechnology)",
                "deny default",
            ),
            (
                "192.0.2.7",
                "203.0.113.1:8443",
                "tcp",
                None,
                "DNAT (to a name)",
                "deny default",
            ),
        ],
    );
}

#[test]
fn base_policy_collections_come_first() {
    let (out, l) = run(&["child-policy-arm.json", "parent-policy-arm.json"], &[]);
    assert!(!out.left_out(), "{:#?}", out.findings);
    assert_eq!(out.policies, ["fwpol-parent", "fwpol-child"]);
    // The parent's group keeps 500; the child's 100 and 200 follow it; the child's
    // "platform" is renamed (group names are unique in Tollgate).
    for s in [
        "# from: fwpol-parent/platform (Azure priority 500); inherited from the parent policy \"fwpol-parent\"\nname = \"platform\"\npriority = 500",
        "# from: fwpol-child/team-app (Azure priority 100)\nname = \"team-app\"\npriority = 501",
        "# from: fwpol-child/platform (Azure priority 200)\nname = \"platform-fwpol-child\"\npriority = 502",
    ] {
        assert!(out.toml.contains(s), "{s}\n---\n{}", out.toml);
    }
    check_flows(
        &l,
        &[
            (
                "198.18.4.7",
                "203.0.113.9:445",
                "tcp",
                None,
                "deny (the parent's deny first)",
                "deny platform/deny-smb/smb-out",
            ),
            (
                "198.18.4.7",
                "203.0.113.9:443",
                "tcp",
                None,
                "allow",
                "allow team-app/team-net/smb-to-files",
            ),
            (
                "198.18.4.7",
                "198.51.100.9:443",
                "tcp",
                Some("wiki.corp.example"),
                "allow (the parent's allow first)",
                "allow platform/platform-web/corp-sites",
            ),
            (
                "198.18.4.7",
                "198.51.100.9:443",
                "tcp",
                Some("app.saas.example"),
                "allow",
                "allow platform-fwpol-child/team-saas/saas",
            ),
            (
                "198.18.4.7",
                "198.51.100.9:443",
                "tcp",
                Some("other.example"),
                "deny",
                "deny default",
            ),
        ],
    );
    // The child alone: its inherited rules are missing, and that is reported.
    let inputs = vec![read("child-policy-arm.json")];
    let out = import(&inputs, &Options::default()).unwrap();
    assert!(out.left_out());
    assert_eq!(out.findings[0].path, "fwpol-child");
    assert_eq!(out.findings[0].effect, Effect::Skipped);
    assert!(out.findings[0]
        .message
        .contains("basePolicy \"fwpol-parent\" is not in the input"));
}

#[test]
fn several_policies_need_a_choice() {
    let inputs = vec![read("aks-egress-arm.json"), read("edge-group.json")];
    let e = import(&inputs, &Options::default()).unwrap_err();
    assert!(e.to_string().contains("--policy"), "{e}");
    let opts = Options {
        policy: Some("fwpol-edge".into()),
        ..Options::default()
    };
    let out = import(&inputs, &opts).unwrap();
    assert_eq!(out.policies, ["fwpol-edge"]);
    assert!(out
        .findings
        .iter()
        .any(|f| f.path == "fwpol-aks/aks-network"));
}

/// The command line: exit 0 when everything was carried over, 1 when not; the file written
/// passes `tollgate check`.
#[test]
fn cli_exit_status_and_check() {
    let exe = env!("CARGO_BIN_EXE_tollgate");
    let dir = std::env::temp_dir().join(format!("tollgate-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = |n: &str| Path::new(DIR).join(n);
    let cases: [(&[&str], u8); 2] = [
        (&["aks-egress-arm.json"], 0),
        (&["premium-policy.json", "premium-groups-cli-list.json"], 1),
    ];
    for (i, (files, want)) in cases.iter().enumerate() {
        let out = dir.join(format!("out{i}.toml"));
        let mut c = Command::new(exe);
        c.args(["import", "azure-policy", "--into"])
            .arg(f("base.toml"))
            .arg("-o")
            .arg(&out);
        for x in *files {
            c.arg(f(x));
        }
        let r = c.output().unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(i32::from(*want)), "{err}");
        if *want == 1 {
            assert!(
                err.contains("fwpol-premium/hub-web/web-allow/docs-paths: skipped: targetUrls"),
                "{err}"
            );
        }
        let c = Command::new(exe).arg("check").arg(&out).output().unwrap();
        assert_eq!(
            c.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&c.stdout)
        );
    }
    let r = Command::new(exe)
        .args(["import", "azure-policy"])
        .arg(f("base.toml"))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a service tags file in the base configuration, Azure's service tags are carried over
/// as `destination_service_tags`: the rules that lost them above now match as in Azure.
#[test]
fn service_tags_are_carried_over_with_a_tags_file() {
    let (out, l) = run_into(
        base_named("base-tags.toml"),
        &["premium-policy.json", "premium-groups-cli-list.json"],
        &[],
    );
    for r in [
        "hub-network/net-deny/no-storage-from-lab",
        "hub-network/net-allow/monitor-and-range",
        "hub-network/net-allow/azurecloud-only",
    ] {
        let path = format!("fwpol-premium/{r}");
        assert!(
            !out.findings.iter().any(|f| f.path == path),
            "{path}: {:#?}",
            out.findings
        );
    }
    assert!(out
        .toml
        .contains("destination_service_tags = [\"AzureMonitor\"]"));
    check_flows(
        &l,
        &[
            (
                "198.18.9.5",
                "198.51.100.230:443",
                "tcp",
                None,
                "deny",
                "deny hub-network/net-deny/no-storage-from-lab",
            ),
            (
                "198.18.9.5",
                "198.51.100.10:443",
                "tcp",
                None,
                "allow (not Storage)",
                "allow hub-network/net-allow/monitor-and-range",
            ),
            (
                "198.18.0.9",
                "198.51.100.200:443",
                "tcp",
                None,
                "allow (AzureMonitor)",
                "allow hub-network/net-allow/monitor-and-range",
            ),
            (
                "198.18.0.9",
                "203.0.113.130:443",
                "tcp",
                None,
                "allow (AzureCloud.westeurope)",
                "allow hub-network/net-allow/azurecloud-only",
            ),
            (
                "198.18.0.9",
                "203.0.113.200:443",
                "tcp",
                Some("other.example"),
                "deny (not in the tag, no name allowed)",
                "deny default",
            ),
        ],
    );
}

/// A configuration using service tags (`appliance.service_tags_file` +
/// `destination_service_tags`); `tags` is the file's path.
fn tags_config(tags: &str, rule_tags: &str) -> String {
    format!(
        r#"[appliance]
inside_prefixes = ["198.18.0.0/15"]
service_tags_file = "{tags}"

[[interface]]
name = "eth0"
role = "one-arm"
addresses = ["198.18.0.4/24"]

[snat]
addresses = ["203.0.113.1"]

[[group]]
name = "g"
priority = 100

  [[group.collection]]
  name = "azure"
  priority = 100
  kind = "network"
  action = "allow"

    [[group.collection.rule]]
    name = "to-azure"
    sources = ["198.18.0.0/16"]
    destination_service_tags = {rule_tags}
    protocols = ["tcp"]
    destination_ports = ["443"]
"#
    )
}

/// Line and column (1-based, characters) of the first `needle` in `text`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap();
    let line = text[..at].matches('\n').count() + 1;
    let col = text[..at].rsplit('\n').next().unwrap().chars().count() + 1;
    (line, col)
}

#[test]
fn check_reports_an_unknown_service_tag_with_its_position() {
    let tags = format!("{DIR}/ServiceTags_Public.json");
    let text = tags_config(
        &tags,
        r#"["AzureCloud.westeurope", "AzureCloud.northpole"]"#,
    );
    let e = load_str(&text, "t.toml").unwrap_err();
    let (line, col) = pos(&text, "\"AzureCloud.northpole\"");
    assert_eq!(
        e.errors().iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        [format!(
            "t.toml:{line}:{col}: error: the service tag \"AzureCloud.northpole\" is not in {tags}"
        )]
    );
    // Without a tags file, the tag cannot be expanded: an error too, at the tag.
    let text = tags_config(&tags, r#"["AzureCloud"]"#)
        .replace(&format!("service_tags_file = \"{tags}\"\n"), "");
    let e = load_str(&text, "t.toml").unwrap_err();
    let (line, col) = pos(&text, "\"AzureCloud\"");
    assert_eq!(
        e.errors()[0].to_string(),
        format!("t.toml:{line}:{col}: error: the service tag \"AzureCloud\" needs appliance.service_tags_file (Azure's ServiceTags_Public JSON) to be expanded")
    );
    // A file that is not a service tags file: an error at the key's value.
    let text = tags_config(&format!("{DIR}/base.toml"), r#"["AzureCloud"]"#);
    let e = load_str(&text, "t.toml").unwrap_err();
    let (line, col) = pos(&text, &format!("\"{DIR}/base.toml\""));
    let first = e.errors()[0].to_string();
    assert!(
        first.starts_with(&format!(
            "t.toml:{line}:{col}: error: appliance.service_tags_file"
        )),
        "{first}"
    );
    // The tag's prefixes are the rule's destinations.
    let l = load_str(
        &tags_config(&tags, r#"["AzureCloud.WestEurope"]"#),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        decide(&l, "198.18.1.1", "203.0.113.129:443", "tcp", None),
        "allow g/azure/to-azure"
    );
    assert_eq!(
        decide(&l, "198.18.1.1", "203.0.113.200:443", "tcp", None),
        "deny default"
    );
}

/// A reload reads the tags file again: a newer file (Azure publishes one a week) changes the
/// rules' destinations, through the daemon's own reload path.
#[test]
fn reload_picks_up_a_new_service_tags_file() {
    use tollgate::control::reload::LiveConfig;
    use tollgate::datapath::updates::PolicyCell;
    let dir = std::env::temp_dir().join(format!("tollgate-tags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tags_text = std::fs::read_to_string(format!("{DIR}/ServiceTags_Public.json")).unwrap();
    std::fs::write(dir.join("tags.json"), &tags_text).unwrap();
    let conf = dir.join("tollgate.toml");
    // Relative to the configuration's directory.
    std::fs::write(&conf, tags_config("tags.json", r#"["Storage.WestEurope"]"#)).unwrap();
    let l = tollgate::config::load_file(&conf).unwrap();
    assert_eq!(
        l.service_tags_file.as_deref(),
        Some(dir.join("tags.json").as_path())
    );
    assert_eq!(
        decide(&l, "198.18.1.1", "198.51.100.230:443", "tcp", None),
        "allow g/azure/to-azure"
    );
    let live = LiveConfig::new(conf.clone(), l.clone(), PolicyCell::new(l.policy.clone()));
    // Storage.WestEurope moves to another prefix in the new file.
    std::fs::write(
        dir.join("tags.json"),
        tags_text.replace("198.51.100.224/28", "198.51.100.240/28"),
    )
    .unwrap();
    let r = live.reload();
    assert!(r.applied, "{}", r.text());
    let now = live.loaded();
    assert_eq!(
        decide(&now, "198.18.1.1", "198.51.100.230:443", "tcp", None),
        "deny default"
    );
    assert_eq!(
        decide(&now, "198.18.1.1", "198.51.100.241:443", "tcp", None),
        "allow g/azure/to-azure"
    );
    // A broken tags file is rejected like a broken configuration: the running one stays.
    std::fs::write(dir.join("tags.json"), "{").unwrap();
    let r = live.reload();
    assert!(!r.applied);
    assert!(
        r.text().contains("appliance.service_tags_file"),
        "{}",
        r.text()
    );
    assert_eq!(
        decide(
            &live.loaded(),
            "198.18.1.1",
            "198.51.100.241:443",
            "tcp",
            None
        ),
        "allow g/azure/to-azure"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
