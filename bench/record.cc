#include "bench/record.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace loopbench {

void run_record::set(std::string_view key, double value) {
  for (auto& [k, v] : fields) {
    if (k == key) {
      v = value;
      return;
    }
  }
  fields.emplace_back(std::string(key), value);
}

std::optional<double> run_record::get(std::string_view key) const {
  for (const auto& [k, v] : fields) {
    if (k == key) return v;
  }
  return std::nullopt;
}

namespace {

std::string number(double v) {
  char buf[64];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else if (std::fabs(v) >= 100) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.4g", v);
  }
  return buf;
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c == '\n') ? ' ' : c;
  }
  return out + "\"";
}

}  // namespace

std::string to_json(const run_record& r) {
  std::string out = "{\"workload\":" + quoted(r.workload) + ",\"backend\":" + quoted(r.backend);
  if (!r.dispatch.empty()) out += ",\"dispatch\":" + quoted(r.dispatch);
  for (const auto& [k, v] : r.fields) out += ",\"" + k + "\":" + number(v);
  out += std::string(",\"ok\":") + (r.ok ? "true" : "false");
  if (!r.error.empty()) out += ",\"error\":" + quoted(r.error);
  return out + "}";
}

std::optional<run_record> parse_json(std::string_view line) {
  // A flat object of string, number and boolean values: all these lines hold.
  run_record r;
  std::size_t i = line.find('{');
  if (i == std::string_view::npos) return std::nullopt;
  ++i;
  auto skip_space = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
  };
  auto read_string = [&](std::string& out) {
    if (i >= line.size() || line[i] != '"') return false;
    for (++i; i < line.size() && line[i] != '"'; ++i) {
      if (line[i] == '\\' && i + 1 < line.size()) ++i;
      out += line[i];
    }
    if (i >= line.size()) return false;
    ++i;
    return true;
  };
  bool saw_ok = false;
  while (true) {
    skip_space();
    if (i >= line.size()) return std::nullopt;
    if (line[i] == '}') break;
    std::string key;
    if (!read_string(key) || i >= line.size() || line[i] != ':') return std::nullopt;
    ++i;
    if (i < line.size() && line[i] == '"') {
      std::string value;
      if (!read_string(value)) return std::nullopt;
      if (key == "workload") r.workload = value;
      if (key == "backend") r.backend = value;
      if (key == "dispatch") r.dispatch = value;
      if (key == "error") r.error = value;
    } else if (line.substr(i, 4) == "true" || line.substr(i, 5) == "false") {
      bool value = line[i] == 't';
      i += value ? 4 : 5;
      if (key == "ok") {
        r.ok = value;
        saw_ok = true;
      }
    } else {
      std::string text(line.substr(i, line.find_first_of(",}", i) - i));
      char* end = nullptr;
      double value = std::strtod(text.c_str(), &end);
      if (end == text.c_str()) return std::nullopt;
      i += text.size();
      r.set(key, value);
    }
  }
  if (!saw_ok) return std::nullopt;
  return r;
}

std::optional<run_record> parse_last_json(std::string_view output) {
  std::size_t brace = output.rfind('{');
  if (brace == std::string_view::npos) return std::nullopt;
  return parse_json(output.substr(brace));
}

}  // namespace loopbench
