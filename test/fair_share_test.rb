# frozen_string_literal: true

require_relative "test_helper"

# requests_per_address: one address with many requests waits behind its
# own, not in front of other clients'.
class FairShareTest < Minitest::Test
  include HttpHelpers

  SLOW = 2

  def setup
    # A number counts every address but 127.0.0.1 (the fresh client here);
    # the busy one connects from 127.0.0.9.
    @server = UnicornServer.new(workers: 2, nightmare: "", config: "nightmare requests_per_address: 2").start
  end

  def teardown
    @busy&.each(&:kill)
    @server.stop
  end

  # Before the share, the 50 slow requests went to the workers' queues
  # first (16 per worker) and the fresh one waited about 50 s.
  def test_a_fresh_client_is_served_within_one_slow_request_of_an_address_that_sent_fifty
    @busy = Array.new(50) { Thread.new { get("/sleep?#{SLOW}", {}, timeout: 120, bind: "127.0.0.9") } }
    @server.wait_until("the busy address's line", 10) { figures["waiting_for_own_address"] >= 40 }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_equal 200, get("/", {}, timeout: 30).status
    waited = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    assert_operator waited, :<, SLOW * 1.5, "served within one slow request (it waited #{waited.round(2)} s)"
    stats = figures
    assert_equal 2, stats["requests_per_address"]
    assert_operator stats["requests_waited_for_own_address"], :>=, 40
    assert_operator stats["in_flight"], :<=, 3, "the busy address has two with the workers, no more"
  end

  # Its own requests still all run, in turn, and a client of the busy
  # address that leaves its line costs nothing.
  def test_the_busy_addresss_requests_all_run_in_turn_and_one_that_leaves_is_skipped
    arrivals = Dir.mktmpdir("nightmare-arrivals")
    @busy = Array.new(6) { Thread.new { get("/sleep?0.5", {}, timeout: 30, bind: "127.0.0.9") } }
    @server.wait_until("four in its line", 10) { figures["waiting_for_own_address"] >= 4 }
    leaving = connect(@server.port, "127.0.0.9")
    leaving.write("GET /arrive?dir=#{arrivals}&seconds=0 HTTP/1.1\r\nHost: t\r\n\r\n")
    @server.wait_until("five in its line", 10) { figures["waiting_for_own_address"] >= 5 }
    leaving.setsockopt(Socket::SOL_SOCKET, Socket::SO_LINGER, [1, 0].pack("ii")) # a reset: it left
    leaving.close
    assert_equal [200] * 6, @busy.map { |thread| thread.value.status }
    @server.wait_until("the line empty", 10) { figures["waiting_for_own_address"].zero? }
    assert_empty Dir.children(arrivals), "the request whose client left never reached the app"
    assert_equal 200, get("/sleep?0", {}, bind: "127.0.0.9").status, "and the address's share came back whole"
  ensure
    FileUtils.rm_rf(arrivals) if arrivals
  end
end
