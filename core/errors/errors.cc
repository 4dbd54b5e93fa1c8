#include "core/errors/errors.h"

#include <utility>

namespace polyloop {

namespace {
std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

std::string summary(const std::string& message, const std::vector<std::exception_ptr>& all) {
  std::string s = message + " (" + std::to_string(all.size()) +
                  (all.size() == 1 ? " sub-exception)" : " sub-exceptions)");
  for (std::size_t i = 0; i < all.size(); ++i) {
    s += (i == 0 ? ": [" : "; [") + std::to_string(i + 1) + "] " + describe(all[i]);
  }
  return s;
}
}  // namespace

ExceptionGroup::ExceptionGroup(const std::string& message, std::vector<std::exception_ptr> exceptions)
    : std::runtime_error(summary(message, exceptions)), exceptions_(std::move(exceptions)) {}

}  // namespace polyloop
