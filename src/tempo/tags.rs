//! Tag names and tag values: what Grafana offers for autocompletion.
