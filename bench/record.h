// One run of one workload, as the JSON line of ../shared/bench/WORKLOADS.md:
// what loopbench's worker processes print and its driver reads back.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loopbench {

struct run_record {
  std::string workload;  // "callbacks", "echo", ...
  std::string backend;
  std::string dispatch;  // "dynamic" or "static"; empty where it does not apply
  // Numeric fields in the order they are printed: n, seconds, ns_per_op, then
  // the workload's own, then peak_rss_kib.
  std::vector<std::pair<std::string, double>> fields;
  bool ok = false;
  std::string error;  // why ok is false, when the run itself could not say

  void set(std::string_view key, double value);
  std::optional<double> get(std::string_view key) const;
};

// The JSON line (no newline). Integral values print without decimals.
std::string to_json(const run_record& r);
// Parses a line printed by to_json() (or by echo_client: the same flat
// shape). Returns nothing if the line is not such an object.
std::optional<run_record> parse_json(std::string_view line);
// The last such line in a program's output, if any.
std::optional<run_record> parse_last_json(std::string_view output);

}  // namespace loopbench
