# frozen_string_literal: true

module Nightmare
  # The +error_page+ directive: the site's own HTML pages for the 502, 503
  # and 504 the front answers itself (workers booting, a deploy, a queue
  # too long, an upstream gone), as nginx's error_page. Browsers get them
  # with the right status (and Retry-After where the front sends it); HEAD
  # and clients that do not ask for HTML get the short plain reply. The
  # app's own 5xx pass untouched.
  #
  #   error_page 502, 503, 504, "/srv/app/current/public/5xx.html"
  #
  # Without it, the try_files root's 502.html, 503.html and 504.html serve,
  # when there (as Thruster's BAD_GATEWAY_PAGE). Pages are read when the
  # config is loaded: a changed page takes effect on HUP.
  class ErrorPages
    STATUSES = [502, 503, 504].freeze
    # The front keeps each page in memory, and each reply holds a copy
    # while its client takes it.
    MAX_SIZE = 64 << 10

    def initialize
      @paths = {}
    end

    def add(statuses, path)
      if statuses.empty? || !path.is_a?(String)
        raise ArgumentError, "error_page needs statuses and a file: " \
                             'error_page 502, 503, 504, "/srv/app/public/5xx.html"'
      end
      statuses.each do |status|
        next if STATUSES.include?(status)

        raise ArgumentError, "error_page #{status.inspect}: the front answers only 502, 503 and 504 itself; " \
                             "the app's own errors are the app's pages"
      end
      path = File.expand_path(path)
      read(path) { |problem| raise ArgumentError, "error_page #{path}: #{problem}" }
      statuses.each { |status| @paths[status] = path }
      self
    end

    # [[status, html], ...] for the front: the pages given, and for the
    # other statuses the try_files root's NNN.html if it is there and fit.
    def to_native(root)
      STATUSES.filter_map do |status|
        if (path = @paths[status])
          [status, read(path) { |problem| raise ArgumentError, "error_page #{path}: #{problem}" }]
        elsif root && File.file?(default = File.join(root, "#{status}.html"))
          page = read(default) { nil }
          [status, page] if page
        end
      end
    end

    private

    # The page, or what the block returns given why it cannot be one.
    def read(path)
      return yield("cannot be read") unless File.file?(path) && File.readable?(path)
      return yield("is larger than #{MAX_SIZE >> 10} KiB; the front keeps it in memory") if File.size(path) > MAX_SIZE

      page = File.read(path, mode: "rb").force_encoding(Encoding::UTF_8)
      page.valid_encoding? ? page : yield("is not UTF-8")
    end
  end
end
