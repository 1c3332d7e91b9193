// duckpart — umbrella header.
#pragma once

#include "duckpart/allocator.hpp"
#include "duckpart/config.hpp"
#include "duckpart/demo_data.hpp"
#include "duckpart/duckdb_repository.hpp"
#include "duckpart/error.hpp"
#include "duckpart/importer.hpp"
#include "duckpart/migrator.hpp"
#include "duckpart/partitioned_repository.hpp"
#include "duckpart/period.hpp"
#include "duckpart/query.hpp"
#include "duckpart/record.hpp"
#include "duckpart/repartition.hpp"
#include "duckpart/repository.hpp"
#include "duckpart/schema.hpp"
#include "duckpart/utilities.hpp"
#include "duckpart/value.hpp"
