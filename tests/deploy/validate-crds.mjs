// Validates Prometheus-operator objects against the operator's API types, as
// generated into @kubernetes-models/prometheus-operator. Reads a JSON array of
// objects on stdin; prints one line per object and exits 1 when any fails or
// has a kind this script does not know.
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";

const kinds = { ServiceMonitor, PrometheusRule, PodMonitor };
let input = "";
for await (const chunk of process.stdin) input += chunk;

let failed = 0;
for (const object of JSON.parse(input)) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const Model = kinds[object.kind];
  if (!Model || object.apiVersion !== Model.apiVersion) {
    console.log(`FAIL ${name}: no schema for ${object.apiVersion} ${object.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
