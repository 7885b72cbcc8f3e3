//! Azure service tags for network rules (`destination_service_tags`), read from the JSON file
//! Microsoft publishes weekly ("Azure IP Ranges and Service Tags", `ServiceTags_Public_*.json`),
//! named by `appliance.service_tags_file`. The file is read on every load, so a reload (SIGHUP,
//! `tollgate reload`, or the file itself changing) picks up a newer one.
//!
//! Only the names and their IPv4 `addressPrefixes` are used; IPv6 prefixes are skipped
//! (Tollgate forwards IPv4 only). Names match ASCII case-insensitively, as in Azure
//! (`AzureCloud.westeurope` and `AzureCloud.WestEurope` are the same tag).

use std::collections::HashMap;

use ipnet::Ipv4Net;
use serde::Deserialize;

/// The tags of one service tags file.
#[derive(Clone, Debug, Default)]
pub struct ServiceTags {
    by_name: HashMap<String, Vec<Ipv4Net>>,
    /// The file's `changeNumber` (Azure bumps it with every published change).
    pub change_number: Option<i64>,
}

#[derive(Deserialize)]
struct File {
    #[serde(rename = "changeNumber")]
    change_number: Option<i64>,
    values: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    name: String,
    properties: Props,
}

#[derive(Deserialize)]
struct Props {
    #[serde(rename = "addressPrefixes", default)]
    address_prefixes: Vec<String>,
}

impl ServiceTags {
    /// Parses a file in the ServiceTags_Public format; the error is a sentence.
    pub fn parse(text: &str) -> Result<ServiceTags, String> {
        let f: File = serde_json::from_str(text).map_err(|e| {
            format!(
                "not a service tags file (the ServiceTags_Public JSON, with \"values\": [{{\"name\", \"properties\": {{\"addressPrefixes\"}}}}]): line {}, column {}: {e}",
                e.line(),
                e.column()
            )
        })?;
        let mut by_name = HashMap::with_capacity(f.values.len());
        for t in f.values {
            let mut nets = Vec::new();
            for p in &t.properties.address_prefixes {
                if p.contains(':') {
                    continue;
                }
                let n = p
                    .trim()
                    .parse::<Ipv4Net>()
                    .map_err(|_| format!("the tag \"{}\" has the prefix \"{p}\", which is not an IPv4 or IPv6 prefix", t.name))?;
                nets.push(n.trunc());
            }
            by_name.insert(t.name.to_ascii_lowercase(), nets);
        }
        Ok(ServiceTags {
            by_name,
            change_number: f.change_number,
        })
    }

    /// The IPv4 prefixes of a tag (possibly none: an IPv6-only tag), or `None` when the file
    /// has no such tag.
    pub fn get(&self, name: &str) -> Option<&[Ipv4Net]> {
        self.by_name
            .get(&name.trim().to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// How many tags the file has.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether the file has no tags.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_published_shape() {
        let t = ServiceTags::parse(
            r#"{"changeNumber": 7, "cloud": "Public", "values": [
              {"name": "AzureCloud.westeurope", "id": "AzureCloud.westeurope",
               "properties": {"changeNumber": 3, "region": "westeurope", "regionId": 18,
                 "platform": "Azure", "systemService": "",
                 "addressPrefixes": ["203.0.113.0/25", "198.51.100.0/24"],
                 "networkFeatures": ["API", "NSG"]}}]}"#,
        )
        .unwrap();
        assert_eq!(t.change_number, Some(7));
        assert_eq!(t.get("azurecloud.WestEurope").unwrap().len(), 2);
        assert!(t.get("Storage").is_none());
        assert!(ServiceTags::parse("{}").is_err());
        assert!(ServiceTags::parse(
            r#"{"values": [{"name": "x", "properties": {"addressPrefixes": ["bad"]}}]}"#
        )
        .is_err());
    }
}
