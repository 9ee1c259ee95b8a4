//! Routing: which channels receive a notification, from the group's labels.

use super::Labels;
use crate::config::alerts::{AlertsConfig, RouteConfig};

fn matches(route: &RouteConfig, labels: &Labels) -> bool {
    let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or("");
    (route.severity.is_empty()
        || route
            .severity
            .iter()
            .any(|s| s.as_str() == label("severity")))
        && (route.clusters.is_empty() || route.clusters.iter().any(|c| c == label("cluster")))
        && route.labels.iter().all(|(k, v)| label(k) == v)
}

/// The channel names for a group with `labels`: the first matching route's
/// channels (and those of later matches while a matched route says
/// `continue`); no route, or no match: every channel.
pub fn channels_for(config: &AlertsConfig, labels: &Labels) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut matched = false;
    for r in &config.routes {
        if !matches(r, labels) {
            continue;
        }
        matched = true;
        for c in &r.channels {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        if !r.continue_ {
            break;
        }
    }
    if !matched {
        out = config.channels.iter().map(|c| c.name.clone()).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::{AlertSeverity, ChannelConfig, ChannelType};

    #[test]
    fn first_match_wins_and_default_is_every_channel() {
        let mut cfg = AlertsConfig::default();
        for n in ["pager", "chat", "log"] {
            cfg.channels
                .push(ChannelConfig::new(n, ChannelType::Console));
        }
        cfg.routes.push(RouteConfig {
            severity: vec![AlertSeverity::Critical],
            channels: vec!["pager".into()],
            continue_: true,
            ..Default::default()
        });
        cfg.routes.push(RouteConfig {
            clusters: vec!["prod".into()],
            channels: vec!["chat".into()],
            ..Default::default()
        });
        let labels = |sev: &str, cluster: &str| -> Labels {
            [("severity", sev), ("cluster", cluster)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            channels_for(&cfg, &labels("critical", "prod")),
            ["pager", "chat"]
        );
        assert_eq!(channels_for(&cfg, &labels("warning", "prod")), ["chat"]);
        assert_eq!(
            channels_for(&cfg, &labels("warning", "dev")),
            ["pager", "chat", "log"]
        );
    }
}
