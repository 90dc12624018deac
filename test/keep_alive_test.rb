# frozen_string_literal: true

require_relative "test_helper"

# Client connections outlive Unicorn's one-request connections: the front
# frames each response so the next request can follow on the same socket.
class KeepAliveTest < Minitest::Test
  include HttpHelpers

  def setup
    @server = UnicornServer.new(workers: 2).start
  end

  def teardown
    @socket&.close
    @server.stop
  end

  def test_many_requests_on_one_connection
    @socket = connect(@server.port)
    50.times do |i|
      @socket.write("GET /env?#{i} HTTP/1.1\r\nHost: t\r\n\r\n")
      response = read_response(@socket)
      assert_equal 200, response.status
      assert_nil response.headers["connection"], "HTTP/1.1 keeps the connection without saying so"
    end
    body = "x" * 100_000
    @socket.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: #{body.bytesize}\r\n\r\n#{body}")
    assert_equal "#{body.bytesize} #{Digest::SHA256.hexdigest(body)}", read_response(@socket).body
  end

  def test_pipelined_requests_are_answered_in_order
    @socket = connect(@server.port)
    @socket.write((0...10).map { |i| "GET /env?n=#{i} HTTP/1.1\r\nHost: t#{i}\r\n\r\n" }.join)
    hosts = Array.new(10) { read_response(@socket).json["HTTP_HOST"] }
    assert_equal (0...10).map { |i| "t#{i}" }, hosts
  end

  def test_close_delimited_response_is_rechunked_and_length_kept
    @socket = connect(@server.port)
    @socket.write("GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
    response = read_response(@socket)
    assert_equal "chunked", response.headers["transfer-encoding"]
    @socket.write("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    response = read_response(@socket)
    assert_equal "6", response.headers["content-length"]
    assert_equal "hello\n", response.body
  end

  def test_http10_keeps_alive_only_when_asked
    @socket = connect(@server.port)
    @socket.write("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    response = read_response(@socket)
    assert_equal "keep-alive", response.headers["connection"]
    @socket.write("GET / HTTP/1.0\r\n\r\n")
    response = read_response(@socket)
    assert_equal "close", response.headers["connection"]
    assert_closed_by_server(@socket)
  end

  def test_connection_close_is_honoured
    response = raw_request("GET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert_equal "close", response.headers["connection"]
  end

  def test_workers_always_see_one_request_per_connection
    env = get("/env", { "Connection" => "keep-alive" }).json
    assert_equal "close", env["HTTP_CONNECTION"]
  end
end
