#include "core/file/file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <system_error>
#include <utility>

#include "core/executor/executor.h"
#include "core/file/file_ops.h"

namespace polyloop {

namespace {

// `File::read_at("/tmp/x", offset 4096): pread: <the errno's text>`.
[[noreturn]] void throw_with_path(const std::system_error& e, const char* call,
                                  const std::string& path, const char* syscall,
                                  std::string detail = {}) {
  std::string what = std::string(call) + "(\"" + path + "\"" + (detail.empty() ? "" : ", ") +
                     detail + "): " + syscall;
  throw std::system_error(e.code(), what);
}

std::string at(std::uint64_t offset) { return "offset " + std::to_string(offset); }

}  // namespace

File::File(File&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    File old(std::move(*this));
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

// close(2) of a file can block (NFS flushes on close), so a destructor
// hands it to a pool thread. Not as a call of the loop: the loop's close()
// skips calls not yet started, and the fd would leak. A job closes it
// whether the pool runs it or drops it at shutdown.
struct close_job final : detail::executor_job {
  explicit close_job(int f) : fd(f) {}
  void run() noexcept override { ::close(fd); }
  void drop() noexcept override { ::close(fd); }
  int fd;
};

File::~File() {
  if (fd_ < 0) return;
  if (EventLoop* loop = running_loop(); loop != nullptr && !loop->is_closed()) {
    try {
      detail::default_executor_of(*loop).submit(std::make_shared<close_job>(fd_));
      return;
    } catch (...) {
      // The pool was shut down or no thread could start: close here instead.
    }
  }
  ::close(fd_);
}

int File::checked_fd(const char* call) const {
  if (fd_ < 0) {
    throw std::system_error(EBADF, std::generic_category(),
                            std::string(call) +
                                ": the File is closed (or was moved from); "
                                "open one with File::open");
  }
  return fd_;
}

Task<File> File::open(std::string path, int flags, mode_t mode) {
  int fd = -1;
  try {
    fd = static_cast<int>(co_await async_openat(AT_FDCWD, path.c_str(), flags | O_CLOEXEC, mode));
  } catch (const std::system_error& e) {
    throw_with_path(e, "File::open", path, "openat");
  }
  co_return File(fd, std::move(path));
}

Task<std::size_t> File::read_at(void* buf, std::size_t len, std::uint64_t offset) {
  int fd = checked_fd("File::read_at");
  try {
    co_return static_cast<std::size_t>(
        co_await async_pread(fd, buf, len, static_cast<std::int64_t>(offset)));
  } catch (const std::system_error& e) {
    throw_with_path(e, "File::read_at", path_, "pread", at(offset));
  }
}

Task<> File::write_at(const void* buf, std::size_t len, std::uint64_t offset) {
  int fd = checked_fd("File::write_at");
  const auto* p = static_cast<const char*>(buf);
  std::size_t done = 0;
  while (done < len) {
    std::int64_t n = 0;
    try {
      n = co_await async_pwrite(fd, p + done, len - done, static_cast<std::int64_t>(offset + done));
    } catch (const std::system_error& e) {
      throw_with_path(e, "File::write_at", path_, "pwrite", at(offset + done));
    }
    if (n == 0) {  // a full device answers ENOSPC; 0 would loop for ever
      throw std::system_error(
          EIO, std::generic_category(),
          "File::write_at(\"" + path_ + "\", " + at(offset + done) + "): pwrite wrote nothing");
    }
    done += static_cast<std::size_t>(n);
  }
}

Task<std::string> File::read_all() {
  checked_fd("File::read_all");
  constexpr std::size_t chunk = 64 * 1024;
  std::string out;
  // The size is a hint: the file may grow or shrink meanwhile, and files
  // such as /proc's report 0. One byte more sees the end in the same call.
  out.resize(static_cast<std::size_t>(co_await size()) + 1);
  std::size_t have = 0;
  for (;;) {
    if (out.size() - have < chunk / 2) out.resize(out.size() + chunk);
    std::size_t n = co_await read_at(out.data() + have, out.size() - have, have);
    if (n == 0) break;
    have += n;
  }
  out.resize(have);
  co_return out;
}

Task<std::uint64_t> File::size() {
  int fd = checked_fd("File::size");
  struct statx st {};
  try {
    co_await async_statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &st);
  } catch (const std::system_error& e) {
    throw_with_path(e, "File::size", path_, "statx");
  }
  co_return st.stx_size;
}

Task<> File::sync() {
  int fd = checked_fd("File::sync");
  try {
    co_await async_fsync(fd);
  } catch (const std::system_error& e) {
    throw_with_path(e, "File::sync", path_, "fsync");
  }
}

Task<> File::datasync() {
  int fd = checked_fd("File::datasync");
  try {
    co_await async_fdatasync(fd);
  } catch (const std::system_error& e) {
    throw_with_path(e, "File::datasync", path_, "fdatasync");
  }
}

Task<> File::close() {
  if (fd_ < 0) co_return;
  int fd = std::exchange(fd_, -1);
  try {
    co_await async_close_file(fd);
  } catch (const std::system_error& e) {
    throw_with_path(e, "File::close", path_, "close");
  }
}

Task<std::string> read_file(std::string path) {
  File f = co_await File::open(std::move(path), O_RDONLY);
  std::string data = co_await f.read_all();
  co_await f.close();
  co_return data;
}

Task<> write_file(std::string path, std::string_view data) {
  File f = co_await File::open(std::move(path), O_WRONLY | O_CREAT | O_TRUNC);
  co_await f.write_at(data.data(), data.size(), 0);
  co_await f.close();
}

}  // namespace polyloop
