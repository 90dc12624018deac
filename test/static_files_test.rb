# frozen_string_literal: true

require_relative "test_helper"
require "time"

# try_files: the front serves what exists under the root, with validators
# and ranges, never a byte from outside it, and sends the rest to the app.
class StaticFilesTest < Minitest::Test
  include HttpHelpers

  SECRET = "the-secret-outside-the-root"

  def setup
    @site = Dir.mktmpdir("nightmare-site")
    @root = File.join(@site, "public")
    FileUtils.mkdir_p(File.join(@root, "docs"))
    FileUtils.mkdir_p(File.join(@root, "empty-dir"))
    File.write(File.join(@root, "app.css"), "body { color: red }\n")
    File.write(File.join(@root, "app.css.gz"), "pretend-gzip")
    File.write(File.join(@root, "about.html"), "<p>about</p>")
    File.write(File.join(@root, "docs", "index.html"), "<p>docs</p>")
    File.write(File.join(@root, ".hidden"), SECRET)
    File.write(File.join(@site, "secret.txt"), SECRET)
    File.symlink(@site, File.join(@root, "escape"))
    File.symlink("/etc/passwd", File.join(@root, "passwd"))
    File.symlink("app.css", File.join(@root, "alias.css"))
    @big = Random.bytes(8 << 20)
    File.binwrite(File.join(@root, "big.bin"), @big)
    @server = UnicornServer.new(workers: 1, config: <<~CONFIG).start
      try_files #{@root.inspect}, "$uri", "$uri.html", "$uri/index.html", "@app"
    CONFIG
  end

  def teardown
    @server.stop
    FileUtils.rm_rf(@site)
  end

  def test_files_are_served_with_their_type_and_validators_without_a_worker
    before = app_count
    response = get("/app.css")
    assert_equal 200, response.status
    assert_equal "body { color: red }\n", response.body
    assert_equal "text/css", response.headers["content-type"]
    assert_equal "bytes", response.headers["accept-ranges"]
    assert_match(/\A"[0-9a-f]+-14"\z/, response.headers["etag"])
    assert_equal File.mtime(File.join(@root, "app.css")).httpdate, response.headers["last-modified"]
    assert_equal "<p>about</p>", get("/about").body, "$uri.html"
    assert_equal "<p>docs</p>", get("/docs/").body, "$uri/index.html"
    assert_equal "body { color: red }\n", get("/alias.css").body, "a symlink inside the root"
    head = raw_request("HEAD /app.css HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal ["200", "20", ""], [head.status.to_s, head.headers["content-length"], head.body]
    assert_equal before + 1, app_count, "none of them reached the app (only the count itself did)"
  end

  def test_what_is_not_a_file_goes_to_the_app
    assert_equal "hello\n", get("/missing.css").body
    assert_equal "hello\n", get("/empty-dir/").body, "no directory listing"
    assert_equal "hello\n", raw_request("POST /app.css HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").body
    %w[/app.css/ /app.css/. /docs/index.html/].each do |path|
      assert_equal "hello\n", get(path).body, "#{path} names a directory, not the file: the app's, as nginx passes it"
    end
  end

  def test_conditional_and_range_requests
    etag = get("/app.css").headers["etag"]
    assert_equal 304, get("/app.css", { "If-None-Match" => etag }).status
    modified = File.mtime(File.join(@root, "app.css")).httpdate
    assert_equal 304, get("/app.css", { "If-Modified-Since" => modified }).status
    assert_equal 200, get("/app.css", { "If-None-Match" => '"other"' }).status
    part = get("/app.css", { "Range" => "bytes=0-3" })
    assert_equal [206, "body", "bytes 0-3/20"], [part.status, part.body, part.headers["content-range"]]
    assert_equal "red }\n", get("/app.css", { "Range" => "bytes=-6" }).body
    past = get("/app.css", { "Range" => "bytes=100-" })
    assert_equal [416, "bytes */20"], [past.status, past.headers["content-range"]]
    assert_equal 200, get("/app.css", { "Range" => "bytes=0-3", "If-Range" => '"stale"' }).status, "If-Range"
  end

  def test_a_precompressed_sibling_goes_to_clients_that_take_it
    gzip = get("/app.css", { "Accept-Encoding" => "gzip, deflate" })
    assert_equal ["pretend-gzip", "gzip", "Accept-Encoding", "text/css"],
                 [gzip.body, gzip.headers["content-encoding"], gzip.headers["vary"], gzip.headers["content-type"]]
    identity = get("/app.css")
    assert_nil identity.headers["content-encoding"]
    assert_equal "Accept-Encoding", identity.headers["vary"], "the identity body varies with Accept-Encoding too"
    assert_nil get("/about.html").headers["vary"], "nothing to vary without a sibling"
  end

  def test_traversal_never_reaches_a_file_outside_the_root
    payloads = ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/..%2fsecret.txt",
                "/%2e%2e%2fsecret.txt", "/docs/../../secret.txt", "/docs/%2e%2e/%2e%2e/secret.txt",
                "/..\\secret.txt", "/%5c..%5csecret.txt", "/secret.txt%00.css", "/app.css%00",
                "/escape/secret.txt", "/escape/public/app.css", "/passwd", "/.hidden", "/docs/../.hidden",
                "//..//secret.txt", "/./../secret.txt", "/%252e%252e/secret.txt"]
    payloads.each do |path|
      response = raw_request("GET #{path} HTTP/1.1\r\nHost: t\r\n\r\n")
      refute_includes response.body, SECRET, path
      refute_includes response.body, "root:", path
      assert_includes [200, 400, 404], response.status, path
      assert_equal "hello\n", response.body, "#{path} went to the app" if response.status == 200
    end
    assert_equal 200, get("/app.css").status, "the front serves on"
  end

  def test_static_and_app_responses_share_a_kept_alive_connection_in_order
    socket = connect(@server.port)
    socket.write("GET /app.css HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n" \
                 "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_equal "body { color: red }\n", read_response(socket).body
    assert_match(/\A\d+\z/, read_response(socket).body)
    big = read_response(socket, 30).body
    assert_equal Digest::SHA256.hexdigest(@big), Digest::SHA256.hexdigest(big), "8 MiB byte-exact"
    assert_equal "<p>docs</p>", read_response(socket).body
  ensure
    socket&.close
  end

  def test_a_slow_reader_of_a_big_file_leaves_the_worker_free
    slow = connect(@server.port)
    slow.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
    slow.write("GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    slow.read(1024) # it reads a little, then nothing more
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_equal "hello\n", get("/").body
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :<, 2
  ensure
    slow&.close
  end

  private

  def app_count = Integer(get("/count").body)
end

# try_files that cannot work stops Unicorn at load time, naming itself.
class StaticFilesConfigErrorTest < Minitest::Test
  def test_bad_try_files_fail_at_load_with_a_clear_message
    Dir.mktmpdir do |dir|
      {
        "nightmare false\ntry_files #{dir.inspect}" => /try_files needs the front: Unicorn alone serves no static/,
        "nightmare true\ntry_files '#{dir}/missing'" => %r{try_files root="#{dir}/missing" is not a readable dir},
        "nightmare true\ntry_files #{dir.inspect}, '$uri/../x'" => /never climbs with \.\./,
        "nightmare true\ntry_files #{dir.inspect}, '$host$uri'" => /only \$uri may be used/,
        "nightmare true\ntry_files #{dir.inspect}, '$uri/'" => /directories are not served/,
        "nightmare true\ntry_files #{dir.inspect}, autoindex: true" => /try_files: unknown option :autoindex/,
      }.each do |config, message|
        File.write(File.join(dir, "unicorn.conf.rb"), "require 'nightmare'\nlisten '127.0.0.1:0'\n#{config}\n")
        File.write(File.join(dir, "config.ru"), "run ->(_) { [200, {}, []] }\n")
        output = IO.popen({ "RUBYLIB" => File.join(ROOT, "lib") },
                          [RbConfig.ruby, UNICORN_BIN, "-c", "unicorn.conf.rb", "config.ru", err: %i[child out]],
                          chdir: dir, &:read)
        refute $?.success?, "#{config} must stop unicorn"
        assert_match(/ArgumentError/, output, config)
        assert_match(message, output, config)
      end
    end
  end
end
