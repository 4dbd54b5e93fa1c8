// libFuzzer target: net::Stream's buffered reads (read, read_into,
// read_exactly, read_until) over one end of a socketpair, while a feeder task
// writes the other end in fuzzer-chosen chunks, yields a fuzzer-chosen number
// of loop iterations in between, and ends with EOF (shutdown) or an error
// (a close with unread data, which the reader sees as ECONNRESET) at a
// fuzzer-chosen point.
//
// Input: byte 0 picks the backend (of those that run here); then commands,
// one byte each (low 3 bits: what; high 5 bits: an argument a):
//   0 feed: the next a+1 bytes (or what is left) are sent as one chunk
//   1 the feeder yields a loop iterations
//   2 read(a+1)          3 read_into(a+1 bytes)     4 read_exactly(a)
//   5 read_until(sep, limit): sep = the next (a % 3)+1 bytes (fewer at the end of
//     the input; none: invalid_argument expected), limit = next byte + 1
//   6 feeder: EOF (shutdown(SHUT_WR)) and stop feeding
//   7 feeder: error (reset) and stop feeding
// Feed commands go to the feeder, read commands to the reader, each in
// order; a feeder that runs out of commands ends with EOF, a reader goes on
// with read() until end of stream or an error.
//
// Checks, beyond "no crash, no sanitizer finding, no hang": what each read
// returns honours its contract (read_exactly: n bytes; read_until: ends with
// the separator, first occurrence; read: at most n, "" only at EOF); the
// bytes read (with IncompleteReadError::partial) are exactly the bytes fed
// after EOF, a prefix of them after an error; no descriptor is leaked from
// one input to the next.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "net/stream.h"
#include "polyloop/polyloop.h"
#include "tests/support/fd_listing.h"

namespace pl = polyloop;
namespace net = polyloop::net;

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "stream_reads_fuzzer: %s\n", what.c_str());
  std::abort();
}

void require(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

enum class feed_kind { bytes, yield, eof, reset };
struct feed_step {
  feed_kind kind;
  std::string bytes;
  int count = 0;
};

enum class read_kind { read, read_into, read_exactly, read_until };
struct read_step {
  read_kind kind;
  std::size_t n = 0;  // bytes, or the limit of read_until
  std::string separator;
};

struct script {
  std::vector<feed_step> feed;
  std::vector<read_step> reads;
};

script decode(std::string_view in) {
  script s;
  bool feeding = true;
  while (!in.empty()) {
    auto c = static_cast<unsigned char>(in.front());
    in.remove_prefix(1);
    std::size_t a = c >> 3;
    switch (c & 7) {
      case 0: {
        std::string_view chunk = in.substr(0, a + 1);
        in.remove_prefix(chunk.size());
        if (feeding) s.feed.push_back({feed_kind::bytes, std::string(chunk), 0});
        break;
      }
      case 1:
        if (feeding) s.feed.push_back({feed_kind::yield, {}, static_cast<int>(a)});
        break;
      case 2:
        s.reads.push_back({read_kind::read, a + 1, {}});
        break;
      case 3:
        s.reads.push_back({read_kind::read_into, a + 1, {}});
        break;
      case 4:
        s.reads.push_back({read_kind::read_exactly, a, {}});
        break;
      case 5: {
        std::string_view sep = in.substr(0, a % 3 + 1);
        in.remove_prefix(sep.size());
        std::size_t limit = 1;
        if (!in.empty()) {
          limit += static_cast<unsigned char>(in.front());
          in.remove_prefix(1);
        }
        s.reads.push_back({read_kind::read_until, limit, std::string(sep)});
        break;
      }
      case 6:
      case 7:
        if (feeding) s.feed.push_back({(c & 7) == 6 ? feed_kind::eof : feed_kind::reset, {}, 0});
        feeding = false;
        break;
    }
  }
  if (feeding) s.feed.push_back({feed_kind::eof, {}, 0});
  return s;
}

struct outcome {
  std::string fed;
  std::string read;
  bool reset = false;       // the feeder ended with an error
  bool read_error = false;  // a read threw std::system_error
};

// Closes `fd` only for a reset; otherwise the caller closes it after the run.
pl::Task<> feeder(int fd, int reader_fd, const std::vector<feed_step>& steps, outcome& out) {
  for (const feed_step& step : steps) {
    switch (step.kind) {
      case feed_kind::bytes: {
        // At most 4 KiB in all (libFuzzer's default -max_len): the socket
        // buffer takes it without blocking.
        ssize_t n = ::send(fd, step.bytes.data(), step.bytes.size(), MSG_NOSIGNAL);
        require(n == static_cast<ssize_t>(step.bytes.size()), "feeder: short send");
        out.fed += step.bytes;
        break;
      }
      case feed_kind::yield:
        for (int i = 0; i < step.count; ++i) co_await pl::sleep(std::chrono::nanoseconds(0));
        break;
      case feed_kind::eof:
        require(::shutdown(fd, SHUT_WR) == 0, "feeder: shutdown");
        co_return;
      case feed_kind::reset:
        // A Unix socket closed with unread data in its receive queue makes
        // its peer's reads fail with ECONNRESET once the queued bytes are read.
        require(::send(reader_fd, "x", 1, MSG_NOSIGNAL) == 1, "feeder: send to its own end");
        require(::close(fd) == 0, "feeder: close");
        out.reset = true;
        co_return;
    }
  }
}

// One read step; appends what it returned (or the partial bytes of an
// IncompleteReadError) to out.read. False once the stream is at its end.
pl::Task<bool> read_once(net::Stream& s, const read_step& step, outcome& out) {
  std::string got;
  bool more = true;
  try {
    switch (step.kind) {
      case read_kind::read:
        got = co_await s.read(step.n);
        require(got.size() <= step.n, "read(n) returned more than n bytes");
        more = !got.empty();
        break;
      case read_kind::read_into: {
        std::string buf(step.n, '\0');
        std::size_t n = co_await s.read_into(std::span<char>(buf.data(), buf.size()));
        require(n <= step.n, "read_into returned more than the buffer");
        got = buf.substr(0, n);
        more = n > 0;
        break;
      }
      case read_kind::read_exactly:
        got = co_await s.read_exactly(step.n);
        require(got.size() == step.n, "read_exactly(" + std::to_string(step.n) + ") returned " +
                                          std::to_string(got.size()) + " bytes");
        break;
      case read_kind::read_until:
        if (step.separator.empty()) {
          // Bad input gets a clear error, and the stream stays usable.
          bool refused = false;
          try {
            co_await s.read_until(step.separator, step.n);
          } catch (const std::invalid_argument&) {
            refused = true;
          }
          require(refused, "read_until with an empty separator did not throw invalid_argument");
          break;
        }
        got = co_await s.read_until(step.separator, step.n);
        require(got.size() >= step.separator.size() &&
                    got.compare(got.size() - step.separator.size(), std::string::npos,
                                step.separator) == 0,
                "read_until: result does not end with the separator");
        require(got.find(step.separator) == got.size() - step.separator.size(),
                "read_until: result goes past the first separator");
        break;
    }
  } catch (const net::IncompleteReadError& e) {
    if (step.kind == read_kind::read_exactly) {
      require(e.partial.size() < step.n, "IncompleteReadError with all the bytes asked for");
    } else {
      require(e.partial.find(step.separator) == std::string::npos,
              "IncompleteReadError although the separator came");
    }
    got = e.partial;
    more = false;
  } catch (const net::LimitOverrunError&) {
    // The bytes stay buffered; the next step reads them.
  } catch (const std::system_error&) {
    out.read_error = true;
    more = false;
  }
  out.read += got;
  co_return more;
}

pl::Task<> reader(net::Stream s, const std::vector<read_step>& steps, outcome& out) {
  bool more = true;
  for (std::size_t i = 0; more && i < steps.size(); ++i)
    more = co_await read_once(s, steps[i], out);
  // Then plain reads until end of stream or an error: everything fed is read.
  const read_step rest{read_kind::read, 4096, {}};
  while (more) more = co_await read_once(s, rest, out);
  s.close();
  try {
    co_await s.wait_closed();
  } catch (const std::system_error&) {
  }
}

pl::Task<> run_script(int reader_fd, int feeder_fd, const script& sc, outcome& out) {
  auto& loop = pl::get_running_loop();
  net::Stream s(reader_fd);
  auto feeding = loop.create_task(feeder(feeder_fd, reader_fd, sc.feed, out));
  co_await reader(s, sc.reads, out);
  co_await feeding;
}

std::vector<std::string> runnable_backends() {
  std::vector<std::string> names;
  for (const pl::BackendInfo& b : pl::available_backends()) {
    // Not a simulated one (sim: its own clock and in-memory sockets): the
    // input is fed through a real socketpair, which sim cannot read.
    if (b.available && pl::make_backend(b.name)->own_clock() == nullptr) names.push_back(b.name);
  }
  require(!names.empty(), "no backend can run here");
  return names;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::vector<std::string> backends = runnable_backends();
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const std::string& backend = backends[static_cast<unsigned char>(in[0]) % backends.size()];
  script sc = decode(in.substr(1));

  const std::map<int, std::string> fds_before = pl::testing::open_fds();
  int sv[2];
  require(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0,
          "socketpair");
  outcome out;
  {
    auto loop = pl::new_event_loop(backend);
    loop->run_until_complete(run_script(sv[0], sv[1], sc, out));
    loop->close();
  }
  if (!out.reset) ::close(sv[1]);
  std::string leaked = pl::testing::fd_differences(fds_before, pl::testing::open_fds());
  require(leaked.empty(), backend + ": descriptors differ after the input:\n" + leaked);

  if (out.reset || out.read_error) {
    require(out.fed.compare(0, out.read.size(), out.read) == 0 && out.read.size() <= out.fed.size(),
            backend + ": the bytes read are not a prefix of the bytes fed");
  } else {
    require(out.read == out.fed, backend + ": read " + std::to_string(out.read.size()) +
                                     " bytes, fed " + std::to_string(out.fed.size()) +
                                     ", or different bytes");
  }
  return 0;
}
