// Index tensors whose contents a full check has passed, remembered so that a check (or a derived layout) that reads
// every stored entry runs once per weight rather than once per call. An entry may carry what the pass computed: the
// CSR kernel keeps each weight's split of its rows into K strips there (csr_mm.cpp).
//
// Why: the bitmap ops check on every call that col_indices and the bitmap describe one pattern (csr_bitmap_mm.cpp).
// That pass reads each stored entry's column and tests its bit: on a 2-core Sapphire Rapids Xeon (4096^2, fp32,
// N = 1, 2 threads, 2026-12-07) it took the decode kernel from 1.32 to 5.16 ms at 80% and from 0.85 to 2.55 ms at
// 90%, slower than dense (2.7-3.7 ms), so a sparsified model decoded slower than the dense one.
//
// A tensor is named by its storage (held weakly: while an entry names a StorageImpl its address cannot be reused
// by another), its data pointer, element count, dtype and version counter, which every in-place write through
// torch bumps. A write that bypasses the counter (through `.data`, a numpy view, or another tensor `set_` on the
// same storage) is not seen; the kernels stay memory-safe on such data, because each row's bit count is checked
// against its row pointers on every call. Inference tensors carry no version counter and non-contiguous ones are
// copied per call, so both are checked every time.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/StorageImpl.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace sparsekern::cpu {

class CheckedPatterns {
 public:
  struct Part {
    c10::weak_intrusive_ptr<c10::StorageImpl> storage;
    const void* data;
    int64_t numel;
    c10::ScalarType dtype;
    uint32_t version;
    bool same(const Part& o) const {
      return storage._unsafe_get_target() == o.storage._unsafe_get_target() && data == o.data &&
             numel == o.numel && dtype == o.dtype && version == o.version;
    }
  };
  struct Key {
    std::vector<Part> parts;
    std::vector<int64_t> extra;  // what else the pass depended on (K, a strip height, a partition)
    bool same(const Key& o) const {
      if (extra != o.extra || parts.size() != o.parts.size()) return false;
      for (size_t i = 0; i < parts.size(); ++i)
        if (!parts[i].same(o.parts[i])) return false;
      return true;
    }
  };

  // The key of these tensors, or nullopt where one of them cannot be named safely (see above).
  static std::optional<Key> key(std::initializer_list<at::Tensor> ts, std::vector<int64_t> extra) {
    Key k{{}, std::move(extra)};
    for (const at::Tensor& t : ts) {
      if (t.is_inference() || !t.is_contiguous() || !t.has_storage()) return std::nullopt;
      k.parts.push_back({t.storage().getWeakStorageImpl(), t.data_ptr(), t.numel(), t.scalar_type(),
                         t.unsafeGetTensorImpl()->version_counter().current_version()});
    }
    return k;
  }

  using Payload = std::shared_ptr<const std::vector<int64_t>>;

  // What the pass of these tensors left (an empty vector for a plain check), or null if it has not run.
  Payload find(const Key& k) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Entry& e : entries_)
      if (e.key.same(k)) return e.payload;
    return nullptr;
  }
  bool contains(const Key& k) { return find(k) != nullptr; }

  // Entries whose storage is gone are dropped here; past kCap the oldest go first. A model holds one entry per
  // sparse layer, and a lookup scans them all (a few microseconds at the cap against a decode call's ~1 ms).
  void insert(Key k, Payload payload = std::make_shared<const std::vector<int64_t>>()) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Entry> kept;
    kept.reserve(entries_.size() + 1);
    const size_t skip = entries_.size() >= kCap ? entries_.size() - kCap + 1 : 0;
    for (size_t i = skip; i < entries_.size(); ++i) {
      bool live = true;
      for (const Part& p : entries_[i].key.parts) live = live && !p.storage.expired();
      if (live) kept.push_back(std::move(entries_[i]));
    }
    kept.push_back({std::move(k), std::move(payload)});
    entries_ = std::move(kept);
  }

 private:
  struct Entry {
    Key key;
    Payload payload;
  };
  static constexpr size_t kCap = 1024;
  std::mutex mu_;
  std::vector<Entry> entries_;
};

}  // namespace sparsekern::cpu
