// A min-heap with four children per node, over a vector of small entries.
//
// Why not std::push_heap/pop_heap: the loop's timer heap can hold hundreds
// of thousands of timers, and a pop walks from the root to a leaf. With four
// children per node that walk is half as deep, and the four children of a
// node (16-byte entries) lie together in one or two cache lines, so a pop
// takes about half the cache misses of a binary heap's.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace polyloop::detail {

// `Earlier(a, b)`: a must come out before b.
template <class Entry, class Earlier>
class quaternary_heap {
 public:
  bool empty() const noexcept { return entries_.empty(); }
  std::size_t size() const noexcept { return entries_.size(); }
  const Entry& top() const noexcept { return entries_.front(); }
  // In no particular order.
  auto begin() noexcept { return entries_.begin(); }
  auto end() noexcept { return entries_.end(); }

  void push(const Entry& e) {
    entries_.push_back(e);
    std::size_t i = entries_.size() - 1;
    while (i > 0) {
      std::size_t parent = (i - 1) / 4;
      if (!Earlier{}(e, entries_[parent])) break;
      entries_[i] = entries_[parent];
      i = parent;
    }
    entries_[i] = e;
  }

  void pop() noexcept {
    Entry last = entries_.back();
    entries_.pop_back();
    if (!entries_.empty()) sift_down(0, last);
  }

  // Keeps the entries for which keep(e) is true, and restores the order.
  template <class Keep>
  void retain(Keep keep) {
    std::size_t kept = 0;
    for (Entry& e : entries_) {
      if (keep(e)) entries_[kept++] = e;
    }
    entries_.resize(kept);
    for (std::size_t i = entries_.size() / 4 + 1; i-- > 0;) {
      if (i < entries_.size()) sift_down(i, entries_[i]);
    }
  }

  // Empties the heap and returns what it held, in no particular order.
  std::vector<Entry> take() noexcept { return std::exchange(entries_, {}); }

 private:
  // Puts `e` at hole `i` or below, moving earlier children up.
  void sift_down(std::size_t i, Entry e) noexcept {
    const std::size_t n = entries_.size();
    while (true) {
      std::size_t first = 4 * i + 1;
      if (first >= n) break;
      std::size_t best = first;
      std::size_t last = first + 4 < n ? first + 4 : n;
      for (std::size_t c = first + 1; c < last; ++c) {
        if (Earlier{}(entries_[c], entries_[best])) best = c;
      }
      if (!Earlier{}(entries_[best], e)) break;
      entries_[i] = entries_[best];
      i = best;
    }
    entries_[i] = e;
  }

  std::vector<Entry> entries_;
};

}  // namespace polyloop::detail
