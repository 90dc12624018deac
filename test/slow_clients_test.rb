# frozen_string_literal: true

require_relative "test_helper"

# Slow clients cost the front a socket each, never a worker: with two
# workers, a hundred of them leave a fast client's requests untouched.
class SlowClientsTest < Minitest::Test
  include HttpHelpers

  SLOWLORIS = 50
  SLOW_UPLOADS = 50

  def setup
    @server = UnicornServer.new(workers: 2).start
  end

  def teardown
    @slow&.each(&:close)
    @server.stop
  end

  def test_fast_client_is_served_while_slowloris_and_slow_uploads_hold_on
    heads = Array.new(SLOWLORIS) { |i| "GET /?loris=#{i} HTTP/1.1\r\nHost: t\r\nX-Pad: #{'p' * 100}\r\n\r\n" }
    uploads = Array.new(SLOW_UPLOADS) do
      "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n#{'u' * 100_000}"
    end
    @slow = (heads + uploads).map { connect(@server.port) }
    progress = Array.new(@slow.size, 0)
    # Every slow client has started: heads sent in part, bodies begun.
    trickle(@slow, heads + uploads, progress, rounds: 5, bytes: ->(i) { i < SLOWLORIS ? 1 : 200 })

    fast = Thread.new { Array.new(10) { get("/pid", {}, timeout: 20) } }
    # Two requests that each hold a worker for a while, at once: they get
    # different workers only if neither worker is held by a slow client.
    pair = Array.new(2) { Thread.new { get("/sleep?0.3", {}, timeout: 20) } }
    until fast.join(0.05) && pair.all? { |thread| thread.join(0) }
      trickle(@slow, heads + uploads, progress, rounds: 1, bytes: ->(i) { i < SLOWLORIS ? 1 : 200 })
    end
    assert_equal [200] * 10, fast.value.map(&:status)
    assert_equal [200, 200], pair.map { |thread| thread.value.status }
    assert_equal 2, pair.map { |thread| thread.value.body }.uniq.size, "both workers were free at once"

    (heads + uploads).each_with_index do |request, i|
      assert_operator progress[i], :<, request.bytesize, "slow client #{i} must still be unfinished"
      assert_nil @slow[i].read_nonblock(1, exception: false).then { |r| r == :wait_readable ? nil : r },
                 "slow client #{i} still waits for its response"
    end
  end

  private

  def trickle(sockets, requests, progress, rounds:, bytes:)
    rounds.times do
      sockets.each_with_index do |socket, i|
        size = [bytes.call(i), requests[i].bytesize - progress[i] - 1].min
        next if size <= 0

        socket.write(requests[i].byteslice(progress[i], size))
        progress[i] += size
      end
      sleep 0.05
    end
  end
end
