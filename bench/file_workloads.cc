#include "bench/file_workloads.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern char** environ;

namespace loopbench {

namespace pl = polyloop;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// to_thread: N calls of a trivial function through the default executor,
// one at a time, each result checked: the cost of a round trip (submit,
// a pool thread's wake-up, the call_soon_threadsafe back, the resume).
pl::Task<std::int64_t> to_thread_round_trips(long n) {
  std::int64_t sum = 0;
  for (long i = 0; i < n; ++i) sum += co_await pl::to_thread([i] { return i + 1; });
  co_return sum;
}

// The file read's bytes: each 8-byte word its own offset, so a read at a
// wrong offset changes the sum.
std::uint64_t word_sum(const std::uint64_t* w, std::size_t words) {
  std::uint64_t s = 0;
  for (std::size_t i = 0; i < words; ++i) s += w[i];
  return s;
}

// Runs `cat path` with its output to /dev/null: seconds, or -1.
double time_cat(const std::string& path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  std::string cat = "cat";
  std::vector<char*> argv = {cat.data(), const_cast<char*>(path.c_str()), nullptr};
  pid_t pid = -1;
  double t0 = now_s();
  int err = posix_spawnp(&pid, "cat", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return now_s() - t0;
}

// Writes the file (the page cache keeps it, so both readers read memory).
bool write_test_file(const std::string& path, std::size_t size, std::uint64_t& sum) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::vector<std::uint64_t> chunk(1 << 17);  // 1 MiB
  sum = 0;
  bool ok = true;
  for (std::size_t off = 0; ok && off < size; off += chunk.size() * 8) {
    for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = off / 8 + i;
    sum += word_sum(chunk.data(), chunk.size());
    ok = ::pwrite(fd, chunk.data(), chunk.size() * 8, static_cast<off_t>(off)) ==
         static_cast<ssize_t>(chunk.size() * 8);
  }
  return ::close(fd) == 0 && ok;
}

pl::Task<std::uint64_t> read_in_chunks(std::string path, std::size_t chunk, std::uint64_t* sum) {
  pl::File f = co_await pl::File::open(path);
  std::vector<std::uint64_t> buf(chunk / 8);
  std::uint64_t offset = 0;
  for (;;) {
    std::size_t n = co_await f.read_at(buf.data(), chunk, offset);
    if (n == 0) break;
    *sum += word_sum(buf.data(), n / 8);
    offset += n;
  }
  co_await f.close();
  co_return offset;
}

}  // namespace

void to_thread_workload(pl::EventLoop& loop, run_record& r) {
  const long n = 100'000;
  double t0 = now_s();
  std::int64_t sum = loop.run_until_complete(to_thread_round_trips(n));
  double seconds = now_s() - t0;
  r.set("n", static_cast<double>(n));
  r.set("seconds", seconds);
  r.set("ns_per_op", seconds * 1e9 / static_cast<double>(n));
  r.ok = sum == static_cast<std::int64_t>(n) * (n + 1) / 2;
  if (!r.ok) r.error = "the results summed to " + std::to_string(sum);
}

void file_read_workload(pl::EventLoop& loop, run_record& r) {
  const std::size_t size = 256u << 20;
  const std::size_t chunk = 64u << 10;
  const char* base = std::getenv("TMPDIR");
  std::string dir = std::string(base != nullptr ? base : "/tmp") + "/loopbench.XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) {
    r.error = "mkdtemp " + dir + " failed";
    return;
  }
  const std::string path = dir + "/file_read";
  std::uint64_t expected = 0;
  if (!write_test_file(path, size, expected)) {
    r.error = "could not write " + path;
  } else {
    double cat_seconds = time_cat(path);
    std::uint64_t sum = 0;
    double t0 = now_s();
    std::uint64_t bytes = loop.run_until_complete(read_in_chunks(path, chunk, &sum));
    double seconds = now_s() - t0;
    const double gib = static_cast<double>(size) / (1u << 30);
    r.set("bytes", static_cast<double>(bytes));
    r.set("seconds", seconds);
    r.set("gib_per_s", gib / seconds);
    if (cat_seconds > 0) r.set("cat_gib_per_s", gib / cat_seconds);
    r.ok = bytes == size && sum == expected && cat_seconds > 0;
    if (!r.ok) {
      r.error = cat_seconds <= 0 ? "cat failed or is not on PATH"
                                 : "read " + std::to_string(bytes) + " bytes, sum " +
                                       (sum == expected ? "right" : "wrong");
    }
  }
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

}  // namespace loopbench
