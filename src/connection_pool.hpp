// A pool of DuckDB connections to one database instance. Private header.
#pragma once

#include <mutex>
#include <vector>

#include "duck/duck.hpp"

namespace duckpart {

class ConnectionPool {
 public:
  explicit ConnectionPool(duckdb_database db) : db_(db) {}

  // A connection for the lease's lifetime; returned to the pool on destruction.
  class Lease {
   public:
    Lease(ConnectionPool* pool, duck::Connection c) : pool_(pool), conn_(std::move(c)) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(std::move(o.conn_)) { o.pool_ = nullptr; }
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease() {
      if (pool_ && conn_) pool_->give_back(std::move(conn_));
    }
    duck::Connection& operator*() noexcept { return conn_; }
    duck::Connection* operator->() noexcept { return &conn_; }

   private:
    ConnectionPool* pool_;
    duck::Connection conn_;
  };

  Lease take() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        duck::Connection c = std::move(idle_.back());
        idle_.pop_back();
        return Lease(this, std::move(c));
      }
    }
    return Lease(this, duck::Connection(db_));
  }

 private:
  void give_back(duck::Connection c) {
    std::lock_guard lock(mu_);
    if (idle_.size() < 16) idle_.push_back(std::move(c));
  }

  duckdb_database db_;
  std::mutex mu_;
  std::vector<duck::Connection> idle_;
};

}  // namespace duckpart
