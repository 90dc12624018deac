# frozen_string_literal: true

require_relative "test_helper"

# max_connections and max_connections_per_address: one address cannot hold
# every connection, and idle keep-alive clients make room for new ones.
class ConnectionLimitsTest < Minitest::Test
  include HttpHelpers

  def teardown
    @sockets&.each(&:close)
    @server&.stop
  end

  def test_one_address_over_its_share_cannot_stop_another_from_being_served
    @server = UnicornServer.new(workers: 2, nightmare: "max_connections: 40, max_connections_per_address: 10").start
    # A slowloris from one address: heads that never end.
    @sockets = Array.new(25) do
      connect(@server.port, "127.0.0.2").tap { |socket| socket.write("GET / HTTP/1.1\r\nHost: t\r\n") }
    end
    answered = answered_within(@sockets, 15, seconds: 5)
    # A client the front handles after all of them: once it is served,
    # a surplus answer to the first address would have shown too.
    assert_equal 200, get("/", {}, bind: "127.0.0.3").status
    answered = IO.select(@sockets, nil, nil, 0)&.first || []
    assert_equal 15, answered.size, "all but 10 answered at once"
    assert(answered.all? { |socket| read_response(socket, 2).status == 503 }, "and the answer is 503")
    assert_equal 503, get("/", {}, bind: "127.0.0.2").status, "that address stays at its share"
    assert_equal 200, get("/", {}, bind: "127.0.0.3").status, "another address is served"
    refused_line = /INFO -- : nightmare: client 127\.0\.0\.2 refused: its address holds max_connections_per_address \(10\)/
    @server.wait_until("the refusal's log line", 5) { @server.log.match?(refused_line) }

    @sockets.each(&:close)
    @server.wait_until("the address's connections released", 5) { get("/", {}, bind: "127.0.0.2").status == 200 }
  end

  # Without room made, the new client would wait in the backlog until the
  # idle ones time out (keepalive_timeout 120s, far past its 10s patience).
  def test_idle_keep_alive_clients_make_room_for_a_new_one
    @server = UnicornServer.new(workers: 2, nightmare: "threads: 1, max_connections: 20, " \
                                                       "max_connections_per_address: 20, keepalive_timeout: 120").start
    @sockets = Array.new(20) do
      connect(@server.port, "127.0.0.2").tap do |socket|
        socket.write("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert_equal 200, read_response(socket).status
      end
    end
    assert_equal 200, get("/", {}, bind: "127.0.0.3", timeout: 10).status
    closed_line = /INFO -- : nightmare: max_connections reached: closed \d+ idle keep-alive connections/
    @server.wait_until("the log line about the room made", 5) { @server.log.match?(closed_line) }
    closed = (IO.select(@sockets, nil, nil, 2)&.first || []).count do |socket|
      socket.read_nonblock(1, exception: false).nil?
    rescue Errno::ECONNRESET
      true
    end
    assert_operator closed, :>=, 1, "the room came from idle clients"
  end

  private

  # The sockets with something to read once +count+ of them have (or
  # +seconds+ passed).
  def answered_within(sockets, count, seconds:)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    answered = []
    while answered.size < count && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      answered = IO.select(sockets, nil, nil, 0.2)&.first || answered
    end
    answered
  end
end
