#include "bench/report.h"

#include <algorithm>
#include <cstdio>
#include <string_view>

namespace loopbench {

namespace {

// One figure of the table: which runs it comes from and which field.
struct figure {
  std::string_view label;
  std::string_view workload;
  std::string_view dispatch;  // "" = any
  double size;                // echo's message size; 0 = any
  std::string_view field;
};

constexpr figure figures[] = {
    {"callbacks, ns per callback", "callbacks", "dynamic", 0, "ns_per_op"},
    {"callbacks, static dispatch, ns", "callbacks", "static", 0, "ns_per_op"},
    {"tasks, ns per task", "tasks", "", 0, "ns_per_op"},
    {"tasks, bytes per task", "tasks", "", 0, "bytes_per_task"},
    {"timers, overhead beyond 200 ms, ms", "timers", "", 0, "overhead_ms"},
    {"timers, p99 lateness, us", "timers", "", 0, "late_p99_us"},
    {"sleep_chain, ns per yield", "sleep_chain", "dynamic", 0, "ns_per_op"},
    {"sleep_chain, static dispatch, ns", "sleep_chain", "static", 0, "ns_per_op"},
    {"queue, ns per item", "queue", "", 0, "ns_per_op"},
    {"queue, allocations per item", "queue", "", 0, "allocs_per_op"},
    {"lock, ns per acquire/release", "lock", "", 0, "ns_per_op"},
    {"lock, allocations per acquire", "lock", "", 0, "allocs_per_op"},
    {"echo 64 B, server CPU us per msg", "echo", "", 64, "server_cpu_us_per_msg"},
    {"echo 64 B, msgs/s", "echo", "", 64, "msgs_per_s"},
    {"echo 64 B, p99 round trip, us", "echo", "", 64, "rtt_p99_us"},
    {"echo 16 KiB, server CPU us per msg", "echo", "", 16384, "server_cpu_us_per_msg"},
    {"echo 16 KiB, msgs/s", "echo", "", 16384, "msgs_per_s"},
    {"http, server CPU us per request", "http", "", 0, "server_cpu_us_per_req"},
    {"http, requests/s", "http", "", 0, "requests_per_s"},
    {"https, server CPU us per request", "https", "", 0, "server_cpu_us_per_req"},
    {"https, requests/s", "https", "", 0, "requests_per_s"},
    {"https handshake, server CPU us", "https_handshake", "", 0, "server_cpu_us_per_handshake"},
    {"idle_conns, server bytes per idle connection", "idle_conns", "", 0,
     "server_bytes_per_idle_conn"},
    {"idle_conns, server CPU us per active msg", "idle_conns", "", 0, "server_cpu_us_per_msg"},
    {"https handshakes/s", "https_handshake", "", 0, "handshakes_per_s"},
    {"to_thread, ns per round trip", "to_thread", "", 0, "ns_per_op"},
    {"file_read 64 KiB, GiB/s", "file_read", "", 0, "gib_per_s"},
    {"file_read, cat's GiB/s", "file_read", "", 0, "cat_gib_per_s"},
    // What the runs caused (EventLoop::stats(), bench/loop_counters.h).
    {"pingpong, ns per round trip", "pingpong", "", 0, "ns_per_op"},
    {"pingpong, syscalls per round trip", "pingpong", "", 0, "syscalls_per_op"},
    {"pingpong, loop iterations per round trip", "pingpong", "", 0, "iterations_per_op"},
    {"pingpong, non-blocking attempts per round trip", "pingpong", "", 0, "attempts_per_op"},
    {"pingpong, io_uring_enter calls per round trip", "pingpong", "", 0, "enters_per_op"},
    // The example servers' loops over the echo and http loads (--stats).
    {"echo 64 B, server syscalls per msg", "echo", "", 64, "syscalls_per_op"},
    {"echo 64 B, server loop iterations per msg", "echo", "", 64, "iterations_per_op"},
    {"http, server syscalls per request", "http", "", 0, "syscalls_per_op"},
    {"http, server loop iterations per request", "http", "", 0, "iterations_per_op"},
    // One loop per core (SO_REUSEPORT): 1 loop, then 2.
    {"many_loops echo, 1 loop, msgs/s", "many_loops", "", 0, "echo_1loop_msgs_per_s"},
    {"many_loops echo, 2 loops, msgs/s", "many_loops", "", 0, "echo_2loops_msgs_per_s"},
    {"many_loops echo, 1 loop, server CPU us per msg", "many_loops", "", 0,
     "echo_1loop_server_cpu_us_per_msg"},
    {"many_loops echo, 2 loops, server CPU us per msg", "many_loops", "", 0,
     "echo_2loops_server_cpu_us_per_msg"},
    {"many_loops http, 1 loop, requests/s", "many_loops", "", 0, "http_1loop_requests_per_s"},
    {"many_loops http, 2 loops, requests/s", "many_loops", "", 0, "http_2loops_requests_per_s"},
    {"many_loops http, 1 loop, server CPU us per request", "many_loops", "", 0,
     "http_1loop_server_cpu_us_per_req"},
    {"many_loops http, 2 loops, server CPU us per request", "many_loops", "", 0,
     "http_2loops_server_cpu_us_per_req"},
};

// A peer's runs have no dispatch (bench/peers.h): they go in the rows of
// polyloop's usual, dynamic dispatch.
bool matches(const figure& f, const run_record& r, const std::string& backend) {
  return r.workload == f.workload && r.backend == backend &&
         (f.dispatch.empty() || r.dispatch == f.dispatch ||
          (r.dispatch.empty() && f.dispatch == "dynamic")) &&
         (f.size == 0 || r.get("size").value_or(0) == f.size);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string format(double v) {
  char buf[32];
  if (v >= 1000) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (v >= 100) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f", v);
  }
  return buf;
}

// The median, and the range of the runs when there are several (this
// machine kind switches between speed states: the range shows it).
std::string cell_text(const summary_cell& c) {
  if (c.runs == 0) return "-";
  if (c.failed > 0) return "FAILED " + std::to_string(c.failed) + "/" + std::to_string(c.runs);
  if (c.runs == 1) return format(c.median);
  return format(c.median) + " (" + format(c.min) + "-" + format(c.max) + ")";
}

std::string escape_xml(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '<') {
      out += "&lt;";
    } else if (c == '>') {
      out += "&gt;";
    } else if (c == '&') {
      out += "&amp;";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

summary summarize(const std::vector<run_record>& runs, const std::vector<std::string>& backends) {
  summary s;
  s.backends = backends;
  for (const figure& f : figures) {
    summary_row row{std::string(f.label), f.field.ends_with("_per_s"), {}};
    bool any = false;
    for (const std::string& b : backends) {
      summary_cell cell;
      std::vector<double> values;
      for (const run_record& r : runs) {
        if (!matches(f, r, b)) continue;
        ++cell.runs;
        if (!r.ok) {
          ++cell.failed;
        } else if (auto v = r.get(f.field)) {
          values.push_back(*v);
        }
      }
      // Runs that do not report the field (a peer's): no figure, not 0.
      if (values.empty() && cell.failed == 0) cell.runs = 0;
      if (!values.empty()) {
        cell.median = median(values);
        cell.min = *std::min_element(values.begin(), values.end());
        cell.max = *std::max_element(values.begin(), values.end());
      }
      any = any || cell.runs > 0;
      row.cells.push_back(cell);
    }
    if (any) s.rows.push_back(std::move(row));
  }
  return s;
}

std::string markdown_table(const summary& s) {
  std::string out = "| workload (median) |";
  std::string rule = "|---|";
  for (const std::string& b : s.backends) {
    out += " " + b + " |";
    rule += "---:|";
  }
  out += "\n" + rule + "\n";
  for (const summary_row& row : s.rows) {
    out += "| " + row.label + " |";
    for (const summary_cell& c : row.cells) out += " " + cell_text(c) + " |";
    out += "\n";
  }
  return out;
}

std::string svg_chart(const summary& s, const std::string& title, const std::string& subtitle) {
  // One panel per figure (their units differ), one bar per backend, each
  // bar's length relative to the largest median of its panel.
  static constexpr std::string_view colours[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759",
                                                 "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};
  const int width = 880, label_x = 16, bar_x = 120, bar_max = 520, bar_h = 14, gap = 4;
  const int panel_h = 26 + static_cast<int>(s.backends.size()) * (bar_h + gap) + 8;
  const int top = 60;
  const int height = top + static_cast<int>(s.rows.size()) * panel_h;
  std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
                    std::to_string(width) + "\" height=\"" + std::to_string(height) +
                    "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out += "<text x=\"" + std::to_string(label_x) + "\" y=\"24\" font-size=\"15\" font-weight=\"bold\">" +
         escape_xml(title) + "</text>\n";
  out += "<text x=\"" + std::to_string(label_x) + "\" y=\"42\" font-size=\"11\" fill=\"#555\">" +
         escape_xml(subtitle) + "</text>\n";
  int y = top;
  for (const summary_row& row : s.rows) {
    double max = 0;
    for (const summary_cell& c : row.cells) {
      if (c.runs > 0 && c.failed == 0) max = std::max(max, c.median);
    }
    out += "<text x=\"" + std::to_string(label_x) + "\" y=\"" + std::to_string(y + 14) +
           "\" font-weight=\"bold\">" + escape_xml(row.label) +
           (row.higher_is_better ? " (higher is better)" : " (lower is better)") + "</text>\n";
    int bar_y = y + 22;
    for (std::size_t i = 0; i < row.cells.size(); ++i) {
      const summary_cell& c = row.cells[i];
      out += "<text x=\"" + std::to_string(label_x + 8) + "\" y=\"" +
             std::to_string(bar_y + bar_h - 3) + "\">" + escape_xml(s.backends[i]) + "</text>\n";
      int len = 0;
      if (c.runs > 0 && c.failed == 0 && max > 0) {
        len = std::max(1, static_cast<int>(c.median / max * bar_max));
        out += "<rect x=\"" + std::to_string(bar_x) + "\" y=\"" + std::to_string(bar_y) +
               "\" width=\"" + std::to_string(len) + "\" height=\"" + std::to_string(bar_h) +
               "\" fill=\"" + std::string(colours[i % std::size(colours)]) + "\"/>\n";
      }
      out += "<text x=\"" + std::to_string(bar_x + len + 6) + "\" y=\"" +
             std::to_string(bar_y + bar_h - 3) + "\">" + escape_xml(cell_text(c)) + "</text>\n";
      bar_y += bar_h + gap;
    }
    y += panel_h;
  }
  return out + "</svg>\n";
}

}  // namespace loopbench
