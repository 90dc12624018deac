# frozen_string_literal: true

require_relative "test_helper"

# The everyday path: requests go through the front to a worker and back.
class BasicTest < Minitest::Test
  include TwoWorkerServer

  def test_get_post_and_head_work
    response = get("/")
    assert_equal 200, response.status
    assert_equal "hello\n", response.body

    body = "name=value&x=1"
    response = raw_request("POST /env HTTP/1.1\r\nHost: test\r\nContent-Length: #{body.bytesize}\r\n\r\n#{body}")
    assert_equal 200, response.status
    assert_equal body, response.json["body"]
    assert_equal "POST", response.json["REQUEST_METHOD"]

    response = raw_request("HEAD / HTTP/1.1\r\nHost: test\r\n\r\n")
    assert_equal 200, response.status
    assert_equal "6", response.headers["content-length"]
    assert_equal "", response.body
  end

  # The address travels in the preamble ahead of the request, so the
  # worker's REMOTE_ADDR is the client's with no header to trust.
  def test_remote_addr_is_the_clients_own
    response = get("/env", {}, bind: "127.0.0.9")
    assert_equal "127.0.0.9", response.json["REMOTE_ADDR"]
    assert_nil response.json["HTTP_X_FORWARDED_FOR"]
  end

  def test_forwarding_headers_are_the_fronts_not_the_clients
    forged = { "X-Forwarded-For" => "6.6.6.6", "X-Forwarded-Proto" => "https",
               "X-Forwarded-Host" => "evil.example", "X_Forwarded_For" => "7.7.7.7",
               "X-Request-Start" => "t=1", "Client-IP" => "6.6.6.6", "X-Real-IP" => "6.6.6.6",
               "True-Client-IP" => "6.6.6.6" }
    env = get("/env", forged).json
    assert_equal "127.0.0.1", env["REMOTE_ADDR"]
    %w[HTTP_CLIENT_IP HTTP_X_REAL_IP HTTP_TRUE_CLIENT_IP].each { |name| assert_nil env[name], name }
    assert_nil env["HTTP_X_FORWARDED_FOR"]
    assert_nil env["HTTP_X_FORWARDED_PROTO"], "only HTTPS requests say so"
    assert_equal "http", env["rack.url_scheme"]
    assert_nil env["HTTP_X_FORWARDED_HOST"]
    start_usec = Integer(env["HTTP_X_REQUEST_START"][/\At=(\d+)\z/, 1])
    assert_in_delta Time.now.to_f, start_usec / 1e6, 60, "X-Request-Start is the front's clock"
  end

  # A worker's first read takes the preamble and up to 16 KiB of the
  # request with it; a longer head is read on from the socket.
  def test_a_head_longer_than_a_workers_first_read_arrives_whole
    long = (1..3).to_h { |i| ["X-Long-#{i}", i.to_s * 7000] }
    body = "x" * 50_000
    head = long.map { |name, value| "#{name}: #{value}\r\n" }.join
    env = raw_request("POST /env HTTP/1.1\r\nHost: t\r\n#{head}Content-Length: #{body.bytesize}\r\n\r\n#{body}").json
    assert_equal [7000, 7000, 7000], (1..3).map { |i| env["HTTP_X_LONG_#{i} bytes"] }
    assert_equal body, env["body"]
  end

  def test_an_absolute_form_target_reaches_the_worker_in_origin_form
    env = raw_request("GET http://app.example:81/env?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n").json
    assert_equal ["/env", "app.example:81", "app.example", "81", "http"],
                 env.values_at("PATH_INFO", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "rack.url_scheme")
  end

  def test_chunked_request_reaches_the_worker_with_a_content_length
    raw = "POST /env HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" \
          "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    env = raw_request(raw).json
    assert_equal "hello world", env["body"]
    assert_equal "11", env["CONTENT_LENGTH"]
    assert_nil env["HTTP_TRANSFER_ENCODING"]
  end

  def test_expect_100_continue_is_answered_by_the_front
    socket = connect(@server.port)
    socket.write("POST /env HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert socket.wait_readable(5), "100 Continue before the body"
    assert_equal "HTTP/1.1 100 Continue\r\n\r\n", socket.readpartial(100)
    socket.write("body")
    response = read_response(socket)
    assert_equal 200, response.status
    assert_equal "body", response.json["body"]
    assert_nil response.json["HTTP_EXPECT"], "the worker must not answer 100 again"
  ensure
    socket&.close
  end

  def test_public_listeners_are_only_in_the_master_and_the_front
    port_inode = lambda do |pid|
      Dir.glob("/proc/#{pid}/fd/*").count do |fd|
        File.readlink(fd).start_with?("socket:") && listening_fd?(pid, fd)
      rescue Errno::ENOENT
        false
      end
    end
    @server.worker_pids.each do |worker|
      assert_equal 0, port_inode.call(worker), "worker #{worker} still holds a public listener"
    end
    assert_operator port_inode.call(@server.front_pid), :>=, 1
  end

  def test_the_master_stays_single_threaded
    # Forking workers from a threaded master would copy client sockets into
    # them: the Rust threads live in the front only. Ruby 3.3 runs a timer
    # thread of its own in every process; a plain Ruby shows how many.
    plain = IO.popen([RbConfig.ruby, "-e", 'puts Dir.children("/proc/self/task").size'], &:read).to_i
    names = ->(pid) { Dir.children("/proc/#{pid}/task").map { |task| File.read("/proc/#{pid}/task/#{task}/comm").strip } }
    assert_equal plain, names.call(@server.pid).size, "the master runs no thread a plain Ruby does not"
    refute names.call(@server.pid).any? { |name| name.start_with?("nightmare") }
    assert_operator names.call(@server.front_pid).count { |name| name.start_with?("nightmare") }, :>, 1
  end

  private

  # A listening TCP socket's inode appears in /proc/net/tcp with state 0A.
  def listening_fd?(_pid, fd)
    inode = File.readlink(fd)[/\d+/]
    File.readlines("/proc/net/tcp").any? { |line| (f = line.split)[3] == "0A" && f[9] == inode }
  end
end

# Without `nightmare true` the gem changes nothing.
class NightmareOffTest < Minitest::Test
  include HttpHelpers

  def test_unicorn_serves_directly_without_a_front
    @server = UnicornServer.new(workers: 1, nightmare: "false").start
    env = get("/env", { "X-Forwarded-For" => "6.6.6.6" }).json
    assert_nil env["HTTP_X_REQUEST_START"], "no front touched the request"
    assert_equal "6.6.6.6", env["HTTP_X_FORWARDED_FOR"], "headers pass untouched, as in plain Unicorn"
    assert_nil @server.front_pid
    refute_includes @server.log, "nightmare"
  ensure
    @server&.stop
  end
end
