// loopbench's summary of many runs: the median of each figure per backend,
// as a Markdown table (workloads as rows, backends as columns) and as an SVG
// bar chart of the same medians.
#pragma once

#include <string>
#include <vector>

#include "bench/record.h"

namespace loopbench {

struct summary_cell {
  int runs = 0;         // runs of this workload on this backend
  int failed = 0;       // runs whose check failed
  double median = 0;    // of the runs that passed
  double min = 0, max = 0;
};

struct summary_row {
  std::string label;  // "callbacks, ns per callback"
  bool higher_is_better = false;  // throughputs; every other figure is a cost
  std::vector<summary_cell> cells;  // one per backend, in `backends` order
};

struct summary {
  std::vector<std::string> backends;
  std::vector<summary_row> rows;  // only rows with at least one run
};

summary summarize(const std::vector<run_record>& runs, const std::vector<std::string>& backends);
std::string markdown_table(const summary& s);
std::string svg_chart(const summary& s, const std::string& title, const std::string& subtitle);

}  // namespace loopbench
