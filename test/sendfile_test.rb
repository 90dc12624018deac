# frozen_string_literal: true

require_relative "test_helper"
require_relative "support/test_certificates"
require "open3"

# sendfile_root: the app (Rack::Sendfile, as Rails' send_file) answers with
# X-Accel-Redirect and the front serves the file itself, byte exact, with
# Range, HEAD and validators, the app's descriptive headers kept, and the
# worker free at once; nothing outside the root is ever served.
class SendfileTest < Minitest::Test
  include HttpHelpers
  include ConfigRefusals

  def setup
    @dir = Dir.mktmpdir("nightmare-sendfile")
    @private = File.join(@dir, "private")
    FileUtils.mkdir_p(File.join(@private, "reports"))
    @report = File.join(@private, "reports", "r.pdf")
    @bytes = Random.bytes(3 << 20)
    File.binwrite(@report, @bytes)
    File.write(File.join(@dir, "outside.txt"), "secret\n")
    @tls_port = LocalProcesses.free_port
    @cert, @key = TestCertificates.make(@dir, "a", ["127.0.0.1"])
  end

  def teardown
    @server&.stop
    FileUtils.rm_rf(@dir)
  end

  def start(extra = "")
    @server = UnicornServer.new(workers: 1, nightmare: "", config: <<~CONFIG).start
      sendfile_root #{@private.inspect} => "/private/"
      #{TestCertificates.ssl_block(@tls_port, @cert, @key)}
      #{extra}
    CONFIG
  end

  def send_file(path) = "/send_file?#{path}"

  def test_the_front_serves_the_file_the_app_names_with_the_apps_headers
    start
    response = get(send_file(@report))
    assert_equal 200, response.status
    assert_equal @bytes.bytesize, response.body.bytesize
    assert_equal @bytes, response.body, "byte exact"
    assert_equal "application/pdf", response.headers["content-type"], "the app's type"
    assert_equal 'attachment; filename="r.pdf"', response.headers["content-disposition"]
    assert_nil response.headers["x-accel-redirect"], "the internal header never reaches the client"
    assert_nil response.headers["x-runtime"], "only the descriptive headers travel with the file"
    assert response.headers["etag"] && response.headers["last-modified"], "validators, as try_files gives"
    assert_equal "keep-alive", response.headers["connection"], "the connection stays open, as for any response"
    partial = get(send_file(@report), { "Range" => "bytes=100-199" })
    assert_equal [206, @bytes[100, 100]], [partial.status, partial.body]
    same = get(send_file(@report), { "If-None-Match" => response.headers["etag"] })
    assert_equal 304, same.status
    head = raw_request("HEAD #{send_file(@report)} HTTP/1.1\r\nHost: test\r\n\r\n")
    assert_equal [200, @bytes.bytesize.to_s], [head.status, head.headers["content-length"]]
    out, _, status = Open3.capture3("curl", "-sk", "--http2", "https://127.0.0.1:#{@tls_port}#{send_file(@report)}",
                                    binmode: true)
    assert status.success?
    assert_equal @bytes, out, "through TLS and HTTP/2 too"
  end

  # One worker, and a client that reads nothing of a 64 MiB file: the
  # worker is free as soon as it has named the file.
  def test_a_slow_reader_of_a_named_file_holds_no_worker
    big = File.join(@private, "big.bin")
    File.open(big, "wb") { |file| file.truncate(64 << 20) }
    start
    slow = TCPSocket.new("127.0.0.1", @server.port)
    slow.write("GET #{send_file(big)} HTTP/1.1\r\nHost: test\r\n\r\n")
    @server.wait_until("the file on its way", 10) { figures["in_flight"].zero? && figures["writing"] >= 1 }
    assert_match(/\A\d+\z/, get("/pid", {}, timeout: 3).body, "the only worker answers another client")
  ensure
    slow&.close
  end

  def test_the_app_is_told_the_mapping_and_a_clients_own_is_dropped
    start
    facts = get("/env", { "X-Accel-Mapping" => "/=/", "X-Sendfile-Type" => "X-Sendfile" }).json
    assert_equal "#{@private}/=/private/", facts["HTTP_X_ACCEL_MAPPING"], "the front's, not the client's"
    assert_equal "X-Accel-Redirect", facts["HTTP_X_SENDFILE_TYPE"]
  end

  def test_a_file_outside_the_root_is_a_500_never_its_bytes
    start
    [File.join(@dir, "outside.txt"), File.join(@private, "..", "outside.txt"), File.join(@private, "missing")].each do |path|
      response = get(send_file(path))
      refute_includes response.body, "secret", path
      assert_equal 500, response.status, path
    end
  end

  def test_config_errors_name_the_directive
    {
      "nightmare true\nsendfile_root '#{@dir}/none' => '/p/'" => %r{sendfile_root #{@dir}/none: not a directory},
      "nightmare true\nsendfile_root #{@private.inspect} => 'p'" => /the URI prefix starts and ends with/,
      "sendfile_root #{@private.inspect} => '/p/'" => /sendfile_root needs the front/,
      "nightmare true\nsendfile_root #{@private.inspect} => '/p/'\nsendfile_root #{@dir.inspect} => '/p/q/'" =>
        %r{sendfile_root "/p/q/" overlaps "/p/"},
    }.then { |refusals| assert_configs_refused(@dir, refusals) }
  end
end
