package redisserver

import (
	"context"
	"fmt"
	"strconv"
)

// Memory returns INFO memory's used_memory: the bytes the server's
// allocator holds for data and its own structures.
func (s *Server) Memory(ctx context.Context) (int64, error) {
	info, err := s.admin.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO memory on %s: %w", s.addr, err)
	}
	n, err := strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("INFO memory on %s: used_memory: %w", s.addr, err)
	}
	return n, nil
}

// DBSize returns the number of keys in the server's database 0.
func (s *Server) DBSize(ctx context.Context) (int64, error) {
	n, err := s.admin.DBSize(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("DBSIZE on %s: %w", s.addr, err)
	}
	return n, nil
}

// FlushAll empties the server, so that a benchmark's runs start alike.
func (s *Server) FlushAll(ctx context.Context) error {
	if err := s.admin.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("FLUSHALL on %s: %w", s.addr, err)
	}
	return nil
}

// EachKey calls fn with every key in the server's database 0, by SCAN: a
// key written meanwhile may be missed or seen twice.
func (s *Server) EachKey(ctx context.Context, fn func(key string)) error {
	iter := s.admin.Scan(ctx, 0, "", 1000).Iterator()
	for iter.Next(ctx) {
		fn(iter.Val())
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("SCAN on %s: %w", s.addr, err)
	}
	return nil
}
